"""File names users have: spaces (`$(cat validation_files.txt)` split them), bytes that are
not UTF-8 (libsndfile could not open them, the CSV and the table raised), names near the
file system's 255-byte limit (an output named after them could not be written once its
work was done), and stems that repeat (two vocoded clips written to one file)."""

import csv
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_wavegen, tone, write

from wavegen.errors import OptionError
from wavegen.outputs import NAME_BYTES, clip_paths, fitted_name, unique_names
from wavegen.paths import expand_lists, expand_paths, read_list, write_list


def latin1_name(folder: Path, stem: bytes) -> Path:
    """folder/<stem>.wav named by bytes that are not UTF-8 (a Latin-1 é); skips the test
    where the file system refuses such a name (macOS)."""
    made = write(folder / "made.wav", tone(0.3, freq=330))
    name = Path(os.fsdecode(os.fsencode(folder) + b"/" + stem + b".wav"))
    try:
        made.rename(name)
    except OSError as err:
        pytest.skip(f"this file system takes no such name ({err})")
    return name


def test_a_list_file_stands_for_the_paths_it_holds(tmp_path):
    spaced = write(tmp_path / "music" / "01 - Prelude in C.wav", tone(0.2))
    plain = write(tmp_path / "music" / "b.wav", tone(0.2))
    folder = tmp_path / "more"
    inner = write(folder / "c d.flac", tone(0.2))
    odd = latin1_name(tmp_path / "music", b"caf\xe9")
    listed = tmp_path / "validation_files.txt"
    write_list(listed, [spaced, odd, folder])
    assert listed.read_bytes().count(b"\n") == 3 and b"caf\xe9.wav\n" in listed.read_bytes()
    assert read_list(listed) == [str(spaced), str(odd), str(folder)]
    assert expand_paths([f"@{listed}", plain]) == [spaced, odd, inner, plain]
    listed.write_bytes(os.fsencode(spaced) + b"\r\n\n" + os.fsencode(plain) + b"\r\n")  # by hand
    assert expand_paths([f"@{listed}"]) == [spaced, plain]
    # saved by Notepad as UTF-8: a byte-order mark made the first path "no such file"
    listed.write_bytes(b"\xef\xbb\xbf" + os.fsencode(spaced) + b"\r\n")
    assert expand_paths([f"@{listed}"]) == [spaced]
    real = write(tmp_path / "@home.wav", tone(0.2))  # a file whose name begins with @
    assert expand_lists([str(real)]) == [str(real)]
    with pytest.raises(OptionError, match=r"@.*nope.txt: cannot read the list .*nope.txt"):
        expand_paths([f"@{tmp_path / 'nope.txt'}"])
    with pytest.raises(OptionError, match="is a folder; @FILE names a list"):
        expand_paths([f"@{folder}"])


def test_a_folder_trains_on_a_file_whose_name_is_not_utf8(tmp_path):
    """libsndfile could not open it ("cannot read audio ('utf-8' codec can't encode ...)"),
    so training skipped it; and the split's hash of its name raised."""
    from wavegen.data import AudioFolder, Preprocessing, split_clips
    from wavegen.family import Codec

    write(tmp_path / "data" / "a.wav", tone(0.3))
    odd = latin1_name(tmp_path / "data", b"caf\xe9")
    folder = AudioFolder(tmp_path / "data", Preprocessing(16000, Codec(256), None, False, 0.95))
    assert sorted(c.path for c in folder.clips) == sorted([str(tmp_path / "data" / "a.wav"),
                                                           str(odd)])
    train, val = split_clips(folder.clips, 0.5)
    assert len(train) == len(val) == 1
    write_list(tmp_path / "validation_files.txt", [c.path for c in val])
    assert read_list(tmp_path / "validation_files.txt") == [val[0].path]


def test_names_are_fitted_to_the_file_system_and_kept_apart(tmp_path):
    long = "é" * 200  # 400 bytes
    name = fitted_name(long, "_2.wav")
    assert len(os.fsencode(name)) <= NAME_BYTES and name.endswith("é_2.wav")
    assert len(os.fsencode(name)) > NAME_BYTES - 2  # shortened by whole characters, no more
    assert fitted_name("x", ".npy") == "x.npy"
    (tmp_path / name).write_bytes(b"")  # the file system takes it
    assert unique_names(["x", "x", "x_2", "X", "y"], ".wav") == [
        "x.wav", "x_2.wav", "x_2_2.wav", "X_3.wav", "y.wav"]
    names = unique_names([long, long], ".wav")
    assert len(set(names)) == 2 and all(len(os.fsencode(n)) <= NAME_BYTES for n in names)
    labelled = clip_paths(tmp_path, 2, ["l" * 300, "m"])
    assert len(os.fsencode(labelled[0].name)) <= NAME_BYTES
    assert labelled[1].name == "sample_001_m.wav"
    # a manifest's label "rock/pop" made a folder sample_000_rock holding pop.wav
    odd = clip_paths(tmp_path, 2, ["rock/pop", 'jazz: "live"?'])
    assert [p.name for p in odd] == ["sample_000_rock_pop.wav", "sample_001_jazz_ _live__.wav"]
    assert all(p.parent == tmp_path for p in odd)


def test_vocoded_clips_of_repeated_names_go_to_distinct_files(tmp_path):
    """a/x.wav, b/x.wav and c/x_2.wav were written to x.wav, x_2.wav and x_2.wav: the
    third replaced the second's audio without a word."""
    from wavegen.cli import _vocode_paths

    sources = [SimpleNamespace(name=n, path=f"{d}/{n}.wav") for d, n in
               [("a", "x"), ("b", "x"), ("c", "x_2"), ("d", "z" * 254)]]
    paths = _vocode_paths(tmp_path, sources, overwrite=False)
    names = [paths[id(s)].name for s in sources]
    assert names[:3] == ["x.wav", "x_2.wav", "x_2_2.wav"]
    assert len(os.fsencode(names[3])) <= NAME_BYTES
    (tmp_path / "x_2_2.wav").write_bytes(b"")
    with pytest.raises(OptionError, match=r"x_2_2.wav exists \(from c/x_2.wav\)"):
        _vocode_paths(tmp_path, sources, overwrite=False)


@pytest.fixture
def checkpoint(tmp_path):
    from dataclasses import asdict

    from wavegen import WaveNet
    from wavegen.checkpoint import save_checkpoint

    model = WaveNet.from_preset("tiny", layers_per_stack=4).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model_config": asdict(model.config), "sample_rate": 16000,
                           "model": model.state_dict()})
    return path, model


def test_score_takes_the_names_users_have(tmp_path, checkpoint):
    """`wavegen score CKPT @validation_files.txt` on held-out files named with spaces,
    with a Latin-1 byte and with 250 characters, printing to a strict UTF-8 terminal:
    each scored as `score_file` scores it, listed in the CSV by its bytes, its
    --per-sample and --plot files written under names that fit. Before, `$(cat ...)`
    split the first name, libsndfile could not open the second, the CSV raised on it,
    and the third's surprisal file raised "File name too long" after its scoring."""
    from wavegen.scoring import score_file

    ckpt, model = checkpoint
    held = [write(tmp_path / "held" / "01 - Prelude.wav", tone(0.3)),
            latin1_name(tmp_path / "held", b"caf\xe9"),
            write(tmp_path / "held" / ("a" * 250 + ".wav"), tone(0.25, freq=220))]
    write_list(tmp_path / "validation_files.txt", held)
    out = tmp_path / "out"
    done = run_wavegen("score", ckpt, "@validation_files.txt", "--csv", out / "s.csv",
                       "--per-sample", out / "npy", "--plot", out / "png", cwd=tmp_path,
                       env={"PYTHONIOENCODING": "utf-8:strict"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "3 files" in done.stdout
    assert os.fsencode(held[1]).decode("utf-8", "surrogateescape") in done.stdout
    with open(out / "s.csv", newline="", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in held]
    for row, path in zip(rows, held, strict=True):
        assert not row["error"]
        assert float(row["log_prob_nats"]) == pytest.approx(
            score_file(model, path)["log_prob_nats"], rel=1e-6)
    for kind in ("npy", "png"):
        names = sorted(p.name for p in (out / kind).iterdir())
        assert [n[:4] for n in names] == ["000_", "001_", "002_"]
        assert all(len(os.fsencode(n)) <= NAME_BYTES for n in names)
    assert np.load(next((out / "npy").glob("002_*"))).shape == (4000,)


def test_a_surprisal_file_that_cannot_be_written_keeps_the_scores(tmp_path, checkpoint,
                                                                  monkeypatch, capsys):
    """A full disk while writing one file's --per-sample array: the partial file goes, the
    file's score stays in the records, the other files are scored and written, exit 1."""
    import errno

    import wavegen.report as report
    from wavegen.checkpoint import load_checkpoint

    ckpt, _ = checkpoint
    clips = [write(tmp_path / f"{n}.wav", tone(0.2, freq=f)) for n, f in [("a", 220),
                                                                         ("b", 330)]]
    real_save = np.save

    def full_disk(path, array):
        if Path(path).name.startswith("000_"):
            Path(path).write_bytes(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(path, array)

    monkeypatch.setattr(report.np, "save", full_disk)
    (tmp_path / "npy").mkdir()
    code = report.score_files(load_checkpoint(ckpt), clips, None, None, tmp_path / "s.csv",
                              tmp_path / "npy", None)
    err = capsys.readouterr().err
    assert code == 1
    assert "a.wav: scored, but " in err and "000_a.npy: no space left on the device" in err
    assert "1 --per-sample/--plot files could not be written" in err
    assert [p.name for p in (tmp_path / "npy").iterdir()] == ["001_b.npy"]
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [r["path"] for r in rows] == [str(p) for p in clips]
    assert all(r["bits_per_sample"] and not r["error"] for r in rows)


def test_clips_numbered_by_two_commands_at_once_do_not_replace_each_other(tmp_path, checkpoint,
                                                                           monkeypatch):
    """Two `wavegen generate -o same/` at once (a loop over temperatures with &) both
    numbered their clips from sample_000, and the later wrote over the earlier's. Here
    the other command writes sample_000.wav while this one samples."""
    import soundfile as sf

    import wavegen.sampler

    ckpt, _ = checkpoint
    out = tmp_path / "out"
    other = tone(0.1, freq=1000)
    real_generate = wavegen.sampler.generate

    def meanwhile(*args, **kwargs):
        write(out / "sample_000.wav", other)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(wavegen.sampler, "generate", meanwhile)
    done = run_wavegen("generate", ckpt, "-n", "2", "--samples", "300", "--seed", "0", "-o",
                       out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.wav")) == ["sample_000.wav", "sample_001.wav",
                                                     "sample_002.wav"]
    assert np.allclose(sf.read(out / "sample_000.wav")[0], other, atol=1e-4)  # untouched
    assert f"{out / 'sample_001.wav'}\n{out / 'sample_002.wav'}" in done.stdout
    # a file system without hard links (FAT, some network shares): renamed into place
    import wavegen.outputs

    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(wavegen.outputs.os, "link", no_links)
    assert wavegen.outputs.write_clip(out / "sample_001.wav", other, 16000) \
        == out / "sample_003.wav"
    assert not list(out.glob(".*.wav"))  # no temporary left
    again = run_wavegen("generate", ckpt, "--samples", "300", "-o", out, "--overwrite",
                        cwd=tmp_path)
    assert again.returncode == 0 and f"{out / 'sample_000.wav'}" in again.stdout
    assert sf.info(out / "sample_000.wav").frames == 300  # --overwrite replaces, as asked
