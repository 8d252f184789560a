"""A training step's memory, known before any of it is allocated (wavegen.stepmemory): a
step too large for the machine is refused by its keys, where it used to be ended by the
kernel's out-of-memory killer ("Killed", exit status 137, no message)."""

import pytest
import torch
from conftest import compose_config

from wavegen.config import ConfigError
from wavegen.family import get_family
from wavegen.stepmemory import WEIGHT_COPIES, saved_bytes, step_floor
from wavegen.train import as_config, check_step_memory, train

FAST = ["model.layers_per_stack=5", "data.synthetic_train_seconds=4",
        "data.synthetic_val_seconds=2", "data.segment_length=500", "train.batch_size=3",
        "train.num_examples=0", "train.sample_check_clips=0", "train.max_steps=1"]
MODELS = {"softmax": ["model=tiny"], "mixture": ["model=tiny", "model.mixtures=3"],
          "flow": ["model=flow_tiny", "model.layers=2"]}


def real_saved(family, config, batch, segment, autocast):
    """The bytes a real step on the CPU saves for its backward (thriftiest formulation)."""
    torch.manual_seed(0)
    model = family.build(config, 16000)
    loss, context = family.crop_loss(model), family.context(model)
    inputs = torch.randint(0, 256, (batch, context + segment))
    targets = torch.randint(0, 256, (batch, segment))
    entries = torch.zeros(batch, dtype=torch.long)
    found = []
    for name in family.formulations or [None]:
        if name is not None:
            family.set_formulation(model, name)
        with autocast:
            found.append(saved_bytes(loss, inputs, targets, entries))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return min(found), weights


@pytest.mark.parametrize("kind", MODELS)
def test_the_floor_is_what_a_real_step_holds(kind):
    """On the meta device the saved tensors are those of a real step, byte for byte, in
    float32; under bf16 autocast the floor (half the float32 bytes) stays below them."""
    config = as_config(compose_config(*MODELS[kind])).model
    family = get_family(config.family)
    batch, segment = 3, 700
    saved, weights = real_saved(family, config, batch, segment, torch.autocast("cpu",
                                                                              enabled=False))
    assert saved > weights  # activations, not the weights, are most of what a step holds
    floor, held = step_floor(family, config, 16000, batch, segment, reduced=False, ema=False)
    assert held == WEIGHT_COPIES * weights
    assert floor - held == saved
    assert step_floor(family, config, 16000, batch, segment, False, ema=True)[1] == \
        (WEIGHT_COPIES + 1) * weights

    in_bf16, _ = real_saved(family, config, batch, segment,
                            torch.autocast("cpu", dtype=torch.bfloat16))
    floor, held = step_floor(family, config, 16000, batch, segment, reduced=True, ema=False)
    assert saved // 2 == floor - held <= in_bf16 < saved


def test_a_step_too_large_is_refused_by_its_keys_before_anything_is_written(
        tmp_path, monkeypatch, caplog):
    """With less memory available than the step holds at least, `wavegen train` names the
    keys that shrink the step (or the model) before the run folder exists."""
    import wavegen.info

    cfg = compose_config("model=tiny", *FAST, f"out_dir={tmp_path}", "name=big")
    typed = as_config(cfg)
    floor, weights = step_floor(get_family("wavenet"), typed.model, 16000, 3, 500,
                                reduced=False, ema=bool(typed.optim.ema_decay))
    monkeypatch.setattr(wavegen.info, "available_memory", lambda: (floor + weights) // 2)
    with pytest.raises(ConfigError, match=r"a training step of train.batch_size=3 crops of "
                       r"data.segment_length=500 samples needs at least [\d.]+ MiB of memory "
                       r"and [\d.]+ MiB is available on the cpu: lower train.batch_size=3 or "
                       r"data.segment_length=500; to keep the step's batch, halve "
                       r"train.batch_size and double train.grad_accum \(now 1\)"):
        train(cfg)
    assert not (tmp_path / "big").exists()

    monkeypatch.setattr(wavegen.info, "available_memory", lambda: weights // 2)
    with pytest.raises(ConfigError, match="the model's weights, their gradients and the "
                       "optimizer's state need at least .* choose a smaller model"):
        check_step_memory(typed, get_family("wavenet"), torch.device("cpu"))

    monkeypatch.setattr(wavegen.info, "available_memory", lambda: floor + weights)
    with caplog.at_level("WARNING"):
        assert train(cfg)["step"] == 1  # what fits the floor runs, with a warning
    assert "a training step may not fit in memory: it holds at least" in caplog.text
    caplog.clear()
    monkeypatch.setattr(wavegen.info, "available_memory", lambda: 2 * floor)
    with caplog.at_level("WARNING"):
        train(compose_config("model=tiny", *FAST, f"out_dir={tmp_path}", "name=fits"))
    assert "may not fit" not in caplog.text


def test_processes_of_one_machine_share_its_memory(monkeypatch):
    """Under torchrun on a CPU every process of the machine holds a step (LOCAL_WORLD_SIZE)."""
    import wavegen.info

    cfg = as_config(compose_config("model=tiny", *FAST))
    floor, _ = step_floor(get_family("wavenet"), cfg.model, 16000, 3, 500, False,
                          bool(cfg.optim.ema_decay))
    monkeypatch.setattr(wavegen.info, "available_memory", lambda: 3 * floor)
    check_step_memory(cfg, get_family("wavenet"), torch.device("cpu"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="needs at least"):
        check_step_memory(cfg, get_family("wavenet"), torch.device("cpu"))


def test_a_vocoder_step_is_measured_with_its_frames(tmp_path, monkeypatch):
    """A vocoder's crops carry log-mel frames: its step is measured with them (no floor
    would mean no check)."""
    import wavegen.info

    monkeypatch.setattr(wavegen.info, "available_memory", lambda: 8 * 2**20)  # > the data
    with pytest.raises(ConfigError, match="a training step of train.batch_size=3"):
        train(compose_config("model=tiny", "condition=mel", *FAST, f"out_dir={tmp_path}"))
