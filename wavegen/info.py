"""`wavegen info`: what a bug report needs (versions, CPU, BLAS, threads, GPUs), and the
one-line diagnosis when torch and torchaudio cannot be loaded together.

Nothing here imports torch at module level: it must work on a broken install.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata

from . import __version__, allocator

PACKAGES = ("torch", "torchaudio", "numba", "llvmlite", "numpy", "soundfile", "soxr",
            "librosa", "hydra-core", "omegaconf", "threadpoolctl")


def installed(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def required(name: str) -> str:
    """wavegen's declared requirement on ``name`` (e.g. "torch<2.15,>=2.11"), or the name."""
    try:
        for line in metadata.requires("wavegen") or []:
            spec = line.split(";")[0].strip()
            if re.match(rf"{re.escape(name)}\b(?![-_])", spec):
                return spec.replace(" ", "")
    except metadata.PackageNotFoundError:
        pass
    return name


def torch_stack_problem() -> str | None:
    """None when torch and torchaudio import together; else one line with the installed
    versions, what went wrong and the install command that fixes it."""
    try:
        import torch  # noqa: F401
        import torchaudio  # noqa: F401
    except Exception as err:  # ImportError, or torchaudio's RuntimeError about CUDA builds
        cause = " ".join(str(err).split()) or type(err).__name__
        return (f"torch {installed('torch')} and torchaudio {installed('torchaudio')} cannot "
                f"be loaded together ({type(err).__name__}: {cause}); install a matching "
                f"pair: pip install '{required('torch')}' '{required('torchaudio')}'")
    return None


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> tuple[bool, str]:
    """(whether this CPU computes bf16 products natively, the evidence)."""
    flags = cpu_flags() & {"avx512_bf16", "amx_bf16"}
    if flags:
        return True, " and ".join(sorted(flags))
    try:
        import torch

        if torch._C._cpu._is_avx512_bf16_supported():
            return True, "avx512_bf16"
    except Exception:  # older torch, or no such probe on this platform
        pass
    return False, "no avx512_bf16 or amx_bf16: bf16 is emulated, slower than fp32"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory a new allocation can have without swapping: Linux's MemAvailable,
    else the physical memory (None where neither can be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return physical_memory()


def physical_memory() -> int | None:
    """Bytes of physical memory (None where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def device_memory(device) -> int | None:
    """Bytes free on ``device`` (a torch.device): a GPU's free memory, else the machine's
    ``available_memory()``."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


def memory_shortfall(need: int, have: int | None = None, how: str = "about") -> str | None:
    """"about NEED of memory and HAVE is available" (``how``: "at least" for a floor) when
    ``need`` bytes exceed ``have`` (default: the memory available now), else None (also
    where that cannot be read)."""
    have = available_memory() if have is None else have
    if have is None or need <= have:
        return None
    return f"{how} {size_text(need)} of memory and {size_text(have)} is available"


def size_text(nbytes: int) -> str:
    """A size for a message: "156 KiB", "12 MiB", "2.5 GiB", "1,117 GiB"."""
    if nbytes < 2**20:
        return f"{nbytes / 2**10:,.0f} KiB"
    if nbytes < 2**30:
        return f"{nbytes / 2**20:,.0f} MiB"
    size = nbytes / 2**30
    return f"{size:,.1f} GiB" if size < 10 else f"{size:,.0f} GiB"


def memory_line() -> str:
    """"A of T available": what the commands' memory checks compare their needs with."""
    have, total = available_memory(), physical_memory()
    if have is None:
        return "unknown"
    return f"{size_text(have)} available" + (f" of {size_text(total)}" if total else "")


def report() -> str:
    """The lines `wavegen info` prints."""
    lines = [f"wavegen {__version__}",
             f"python {platform.python_version()} ({sys.executable}; {platform.system()} "
             f"{platform.machine()})"]
    lines += [f"{name:<14}{installed(name)}" for name in PACKAGES]
    try:
        import soundfile

        lines.append(f"{'libsndfile':<14}{soundfile.__libsndfile_version__}")
    except Exception as err:
        lines.append(f"{'libsndfile':<14}cannot load soundfile ({err})")
    lines.append(f"{'cpu':<14}{cpu_name()}; {usable_cpus()} usable CPUs")
    lines.append(f"{'memory':<14}{memory_line()}")
    lines.append(f"{'malloc':<14}{allocator.policy()}")
    problem = torch_stack_problem()
    if problem:
        lines.append(f"{'problem':<14}{problem}")
        return "\n".join(lines)
    import torch

    bf16, why = native_bf16()
    lines.append(f"{'torch cpu':<14}capability {torch.backends.cpu.get_cpu_capability()}; "
                 f"native bf16: {'yes' if bf16 else 'no'} ({why}); "
                 f"{torch.get_num_threads()} threads")
    if bf16:
        from .formulation import bf16_gain

        gain = bf16_gain()
        lines.append(f"{'bf16 training':<14}" + (
            f"train.precision=bf16 ran a training step {gain[0]:.1f}x as fast as fp32 here "
            f"(measured at the start of a run: {gain[1]})" if gain else
            "not measured yet: the first fp32 `wavegen train` on this CPU measures what "
            "train.precision=bf16 gains") + "; train.precision=auto picks bf16 here")
    lines += family_notes()
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    lines.append(f"{'torch blas':<14}{blas.group(1) if blas else 'unknown'}")
    lines.append(f"{'numpy blas':<14}{numpy_blas()}")
    lines.append(f"{'cuda':<14}{cuda_devices(torch)}")
    return "\n".join(lines)


def family_notes() -> list[str]:
    """Each registered family's lines on how its code runs here (``Family.host_notes``)."""
    from .family import get_family, known_families

    lines = []
    for name in known_families():
        try:
            notes = get_family(name).host_notes()
        except Exception as err:  # a family that cannot load here still leaves the rest
            notes = [f"cannot load ({err})"]
        lines += [f"{name:<14}{note}" for note in notes]
    return lines


def numpy_blas() -> str:
    """numpy's BLAS, its version, the kernels it runs (threadpoolctl) and its threads."""
    try:
        import numpy  # noqa: F401  (loads the BLAS that threadpoolctl looks for)
        from threadpoolctl import threadpool_info
    except ImportError as err:
        return f"unknown ({err})"
    found = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not found:
        return "none found"
    i = found[0]
    core = os.environ.get("OPENBLAS_CORETYPE")
    forced = f", OPENBLAS_CORETYPE={core}" if core else ""
    return (f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')} "
            f"kernels{forced}); {i.get('num_threads')} threads")


def cuda_devices(torch) -> str:
    if not torch.cuda.is_available():
        return f"no CUDA device (torch built for CUDA {torch.version.cuda or 'none'})"
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append(f"cuda:{i} {p.name} ({p.total_memory / 2**30:.0f} GiB, compute "
                   f"capability {p.major}.{p.minor})")
    return f"CUDA {torch.version.cuda}: " + "; ".join(out)
