import logging
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import randomize_biases, run_wavegen, tone, write

from wavegen import WaveNet, mulaw
from wavegen.augment import Augmentation
from wavegen.data import (
    IGNORE,
    AudioFolder,
    Clip,
    CropSampler,
    DataError,
    Preprocessing,
    StepBatches,
    replace_with_draws,
    split_clips,
    synthetic_audio,
)
from wavegen.family import Codec

PREP = Preprocessing(sample_rate=16000, codec=Codec(256), top_db=None,
                     normalize=False, peak=0.95)


def make_folder(root, n=4):
    for i in range(n):
        write(root / f"sub{i % 2}" / f"clip{i}.wav", tone(0.3, freq=200 + 100 * i, seed=i))
    (root / "README.txt").write_text("not audio, and not an audio extension either")
    return root


def test_cache_is_reused_and_invalidated(tmp_path, caplog):
    root, cache = make_folder(tmp_path / "audio"), tmp_path / "cache"
    first = AudioFolder(root, PREP, cache)
    assert (first.report.decoded, first.report.reused) == (4, 0)
    again = AudioFolder(root, PREP, cache)
    assert (again.report.decoded, again.report.reused) == (0, 4)
    assert "4 reused" in again.report.summary()
    for a, b in zip(first.clips, again.clips, strict=True):
        assert np.array_equal(a.classes, b.classes)
    assert isinstance(again.clips[0].classes, np.memmap)

    other_rate = AudioFolder(root, Preprocessing(8000, Codec(256), None, False, 0.95), cache)
    assert other_rate.report.decoded == 4
    assert len(other_rate.clips[0]) == len(first.clips[0]) // 2
    assert AudioFolder(root, Preprocessing(16000, Codec(64), None, False, 0.95), cache) \
        .report.decoded == 4
    assert AudioFolder(root, Preprocessing(16000, Codec(256), 30.0, False, 0.95), cache) \
        .report.decoded == 4

    changed = root / "sub0" / "clip0.wav"
    write(changed, tone(0.5, freq=300))
    os.utime(changed, ns=(1, 1))
    after = AudioFolder(root, PREP, cache)
    assert (after.report.decoded, after.report.reused) == (1, 3)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_a_folder_of_more_files_than_may_be_open_at_once_is_used(tmp_path):
    """Every clip was a memory map of its own cache entry, and each map holds an open file:
    a folder of 2000 clips stopped with "OSError: [Errno 24] Too many open files" under
    the usual limit of 1024 (a speech corpus is tens of thousands of clips), after first
    calling a cache entry "unreadable". Past PACK_FILES files, the clips are views of one
    cache entry that holds them all (one open file), written once and then reused."""
    import resource

    from wavegen.data import PACK_FILES

    root, cache = tmp_path / "corpus", tmp_path / "cache"
    n = PACK_FILES + 60
    rng = np.random.default_rng(0)
    for i in range(n):
        write(root / f"spk{i % 3}" / f"utt{i:04d}.wav",
              (rng.standard_normal(160 + i) * 0.1).astype(np.float32), subtype="FLOAT")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = len(os.listdir("/proc/self/fd")) + n // 2  # fewer than one file a clip
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        first = AudioFolder(root, PREP, cache)
        again = AudioFolder(root, PREP, cache)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (first.report.decoded, again.report.reused) == (n, n) and len(again.clips) == n
    assert len(list(cache.glob("pack-*.npy"))) == 1  # written once, then reused
    small = AudioFolder(make_folder(tmp_path / "few"), PREP, cache)  # few files: no pack
    assert len(list(cache.glob("pack-*.npy"))) == 1 and len(small.clips) == 4
    other = AudioFolder(root, Preprocessing(8000, Codec(256), None, False, 0.95), cache)
    assert len(list(cache.glob("pack-*.npy"))) == 2 and len(other.clips) == n  # other rate
    write(root / "spk0" / "added.wav", tone(0.05))
    grown = AudioFolder(root, PREP, cache)  # a file added: a new pack replaces the old one
    assert len(grown.clips) == n + 1 and len(list(cache.glob("pack-*.npy"))) == 2
    assert np.array_equal(again.clips[-1].classes, grown.clips[-1].classes)  # still readable
    for clip in again.clips:  # the values of each file's own cache entry
        path = root / clip.name
        assert np.array_equal(clip.classes, np.load(AudioFolder._cache_path(first, path)))
        assert len(clip) == sf.info(path).frames


def test_a_cache_that_cannot_be_written_is_one_line_naming_the_key(tmp_path, monkeypatch):
    """A cache folder under a file (or read-only, or on a full disk) ended in a traceback
    (NotADirectoryError, OSError), and a failed write left its temporary file behind."""
    import errno

    root = make_folder(tmp_path / "audio")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    done = run_wavegen("train", f"data.root={root}", f"data.cache_dir={blocked / 'cache'}",
                       "model=tiny", "train.max_steps=1", f"out_dir={tmp_path / 'runs'}",
                       cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "cannot write" in done.stderr and "set data.cache_dir to a folder" in done.stderr
    assert not (tmp_path / "runs").exists()

    def full_disk(f, array):
        f.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = tmp_path / "cache"
    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(DataError, match="no space left on the device: the decoded audio is "
                                        f"cached in {cache}; set data.cache_dir"):
        AudioFolder(root, PREP, cache)
    assert list(cache.iterdir()) == []  # no temporary file left


def test_a_scan_of_many_files_shows_a_bar_over_them(tmp_path, capsys, monkeypatch):
    """A first scan of a corpus (13,000 clips) decodes for minutes; it printed nothing until
    it was done. A folder of SCAN_BAR_FILES files or more (here 6) is scanned with a bar
    over its files, in the main process only."""
    import wavegen.data

    root = make_folder(tmp_path / "audio", n=6)
    monkeypatch.setattr(wavegen.data, "SCAN_BAR_FILES", 6)
    AudioFolder(root, PREP, tmp_path / "cache", progress=True)
    err = capsys.readouterr().err
    assert "scan data.root: 100%" in err and "6/6" in err
    AudioFolder(root, PREP, tmp_path / "cache")  # progress off (other DDP ranks)
    assert "scan" not in capsys.readouterr().err
    monkeypatch.setattr(wavegen.data, "SCAN_BAR_FILES", 7)
    AudioFolder(root, PREP, tmp_path / "cache", progress=True)  # fewer files: no bar
    assert "scan" not in capsys.readouterr().err


def test_a_first_scan_decodes_files_side_by_side_within_a_memory_budget(tmp_path,
                                                                         monkeypatch):
    """A first scan decoded one file at a time: a corpus of hours of mp3 kept one core busy
    for minutes while the others idled. Files are decoded on data.decode_workers threads
    (here two, which must meet), with the same clips, cache and report as one at a time;
    files whose decoding would not fit in half the free memory together wait their turn."""
    import threading

    import wavegen.data

    root = make_folder(tmp_path / "audio", n=6)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00")
    one = AudioFolder(root, PREP, tmp_path / "one", workers=1)
    decode, pair = wavegen.data.load_audio, threading.Barrier(2, timeout=10)

    def meeting(*args, both=pair, **kwargs):
        both.wait()  # passes only when two files are decoded at once
        return decode(*args, **kwargs)

    monkeypatch.setattr(wavegen.data, "load_audio", meeting)
    two = AudioFolder(root, PREP, tmp_path / "two", workers=2)
    assert [c.name for c in two.clips] == [c.name for c in one.clips]
    for a, b in zip(one.clips, two.clips, strict=True):
        assert np.array_equal(a.classes, b.classes)
    assert (two.report.decoded, two.report.reused, len(two.report.files)) == (6, 0, 6)
    assert [p.name for p, _ in two.report.skipped] == ["broken.wav"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) \
        == sorted(p.name for p in (tmp_path / "one").iterdir())

    monkeypatch.setattr(wavegen.data, "available_memory", lambda: 2)  # room for one at a time
    alone = threading.Barrier(2, timeout=1)
    monkeypatch.setattr(wavegen.data, "load_audio", lambda *a, **k: meeting(*a, both=alone, **k))
    with pytest.raises(threading.BrokenBarrierError):
        AudioFolder(root, PREP, tmp_path / "three", workers=2)


def test_bad_files_are_skipped_and_counted(tmp_path, caplog):
    root = make_folder(tmp_path / "audio", n=2)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00")
    (root / "empty.flac").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        folder = AudioFolder(root, PREP, tmp_path / "cache")
    assert len(folder.clips) == 2
    skipped = sorted(p.name for p, _ in folder.report.skipped)
    assert skipped == ["broken.wav", "empty.flac"]
    assert "2 skipped" in folder.report.summary()
    assert sum("broken.wav" in r.message for r in caplog.records) == 1


def test_copies_of_a_file_are_used_once(tmp_path, caplog):
    """A folder holding one recording twice ("clip0.wav" and "clip0 (1).wav", a copy in
    another folder, a link to it) trained on it twice, and the split could hold one copy
    out while training on the other: validation then scored audio the model had learnt.
    A file of the same size with other bytes is not a copy."""
    import shutil

    root = make_folder(tmp_path / "audio", n=3)
    shutil.copy(root / "sub0" / "clip0.wav", root / "sub0" / "clip0 (1).wav")
    shutil.copy(root / "sub1" / "clip1.wav", root / "elsewhere.wav")
    (root / "sub1" / "link.wav").symlink_to(root / "sub0" / "clip2.wav")
    same_size = write(root / "other.wav", tone(0.3, freq=900, seed=7))
    assert same_size.stat().st_size == (root / "sub0" / "clip0.wav").stat().st_size
    with caplog.at_level(logging.WARNING):
        folder = AudioFolder(root, PREP, tmp_path / "cache")
    assert sorted(c.name for c in folder.clips) == [
        "elsewhere.wav", "other.wav", "sub0/clip0 (1).wav", "sub0/clip2.wav"]
    copied = {p.name: why for p, why in folder.report.skipped}
    assert sorted(copied) == ["clip0.wav", "clip1.wav", "link.wav"]
    assert copied["clip1.wav"].startswith(f"the same bytes as {root / 'elsewhere.wav'}")
    assert "3 skipped" in folder.report.summary()
    assert sum("link.wav" in r.message for r in caplog.records) == 1


def test_macos_metadata_files_are_not_audio(tmp_path, caplog):
    """A folder copied by macOS to a FAT or network drive holds "._NAME.wav" beside every
    NAME.wav (AppleDouble metadata, 4 KB): each was a line saying it cannot be read, and
    counted as skipped (a folder of 5000 songs: 5000 lines that hide the real problems)."""
    from wavegen.paths import expand_paths

    root = make_folder(tmp_path / "audio", n=2)
    for clip in sorted(root.rglob("clip*.wav")):
        (clip.parent / f"._{clip.name}").write_bytes(b"\x00\x05\x16\x07" + bytes(4092))
    with caplog.at_level(logging.WARNING):
        folder = AudioFolder(root, PREP, tmp_path / "cache")
    assert len(folder.clips) == 2 and folder.report.skipped == []
    assert "._clip" not in caplog.text
    assert [p.name for p in expand_paths([root])] == ["clip0.wav", "clip1.wav"]


def test_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable audio in .*empty: no audio files"):
        AudioFolder(tmp_path / "empty", PREP, tmp_path / "cache")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_text("nope")
    with pytest.raises(DataError, match="bad: 1 of 1 audio files cannot be used"):
        AudioFolder(bad, PREP, tmp_path / "cache")
    with pytest.raises(DataError, match="missing.*does not exist"):
        AudioFolder(tmp_path / "missing", PREP, tmp_path / "cache")
    one = write(tmp_path / "one.wav", tone(0.1))
    with pytest.raises(DataError, match=r"data.root=.*one.wav is a file; data.root takes a "
                                        r"folder .* put it in a folder of its own"):
        AudioFolder(one, PREP, tmp_path / "cache")
    with pytest.raises(DataError, match=r"data.val_root=.*one.wav is a file; data.val_root "
                                        r"takes a folder of audio files$"):
        AudioFolder(one, PREP, tmp_path / "cache", key="data.val_root")


def test_split_is_deterministic_and_holds_out_at_least_one():
    clips = [Clip(f"f{i}.wav", np.zeros(10, np.uint8)) for i in range(10)]
    train, val = split_clips(clips, 0.2)
    assert len(val) == 2 and len(train) == 8
    assert {c.name for c in val} == {c.name for c in split_clips(list(reversed(clips)), 0.2)[1]}
    assert len(split_clips(clips[:2], 0.01)[1]) == 1
    assert len(split_clips(clips[:2], 0.99)[0]) == 1
    (t,), (v,) = split_clips([Clip("one.wav", np.arange(100, dtype=np.uint8))], 0.1)
    assert len(t) == 90 and len(v) == 10 and v.classes[0] == 90


def test_crops_match_the_whole_sequence_likelihood():
    """A crop's training targets get exactly the log-probabilities that the full-sequence
    model gives those positions: context, silence before the start and alignment."""
    model = WaveNet.from_preset("tiny", layers_per_stack=6).eval()
    randomize_biases(model)
    r = model.receptive_field
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, 700).astype(np.uint8)
    crops = CropSampler([Clip("x", x)], r - 1, segment_length=100, pad=model.silence)
    with torch.no_grad():
        full = model.log_prob(torch.from_numpy(x.astype(np.int64))[None])[0]
        for _ in range(5):
            inputs, targets, _ = crops.sample(4, rng)
            assert inputs.shape == (4, r - 1 + 100) and targets.shape == (4, 100)
            logp = model.valid_logits(inputs).log_softmax(-1).gather(-1, targets[..., None])
            for b in range(4):
                # locate the crop in x from its targets (random classes: unique in practice)
                start = next(s for s in range(601) if np.array_equal(x[s : s + 100],
                                                                      targets[b].numpy()))
                assert torch.allclose(logp[b, :, 0], full[start : start + 100], atol=1e-5)


def test_crop_at_file_start_has_silence_context_and_short_files_are_padded():
    x = np.arange(1, 31, dtype=np.uint8)  # 30 samples, shorter than the segment
    crops = CropSampler([Clip("short", x)], context=7, segment_length=50, pad=128)
    inputs, targets, _ = crops.sample(2, np.random.default_rng(0))
    assert inputs[0, :8].tolist() == [128] * 8  # silence before x[0]
    assert inputs[0, 8:38].tolist() == list(range(1, 31))  # then the file itself
    assert inputs[0, 38:].eq(128).all()  # padding past the end
    assert targets[0, :30].tolist() == list(range(1, 31))
    assert targets[0, 30:].eq(IGNORE).all()


def test_synthetic_audio_is_deterministic_and_in_range():
    a, b = synthetic_audio(2.0, 16000, 3), synthetic_audio(2.0, 16000, 3)
    assert np.array_equal(a, b) and a.shape == (32000,) and np.abs(a).max() <= 1.0
    assert not np.array_equal(a, synthetic_audio(2.0, 16000, 4))


def test_start_share_crops_begin_at_the_first_sample_and_zero_changes_nothing():
    clips = [Clip(f"c{i}", np.arange(5000 + 1000 * i, dtype=np.uint8)) for i in range(3)]
    plain = CropSampler(clips, context=63, segment_length=300, pad=128)
    rng = np.random.default_rng(7)  # what draw() did before start_share existed
    picks = rng.choice(3, size=50, p=plain.weights)
    before = [(int(k), int(rng.integers(0, len(clips[k]) - 300 + 1))) for k in picks]
    assert plain.draw(50, np.random.default_rng(7)) == before
    starts = CropSampler(clips, 63, 300, 128, start_share=1.0).draw(50, np.random.default_rng(7))
    assert {start for _, start in starts} == {0}
    some = CropSampler(clips, 63, 300, 128, start_share=0.3).draw(2000, np.random.default_rng(1))
    assert 0.25 < sum(start == 0 for _, start in some) / 2000 < 0.35
    inputs, _, _ = plain.build([(0, 0)])
    assert (inputs[0, :64] == 128).all()  # a crop at the start sees only silence before it


def test_input_noise_spares_only_the_padding_and_is_the_same_for_any_world():
    """data.input_noise: the inputs from a clip and the silence before it get rounded
    Gaussian noise (clamped to the classes); the padding past a clip's end and the targets
    stay exact; each process of a 2-process run gets its rows of the 1-process batch, noise
    included; sigma 0 draws nothing (the batches are those of before)."""
    clips = [Clip("long", np.full(3000, 250, dtype=np.uint8)),
             Clip("short", np.full(40, 3, dtype=np.uint8))]  # always padded past its end
    crops = CropSampler(clips, context=31, segment_length=100, pad=128, start_share=0.5)

    def picks(n):
        return crops.draw(8, np.random.default_rng([5, n]))

    # a batch with crops of both clips, one of the long clip at its start
    n = next(n for n in range(200) if (0, 0) in picks(n) and any(c == 1 for c, _ in picks(n)))
    inputs, targets, _, _, _, _ = StepBatches(crops, seed=5, micro_batch=8)[n]
    noisy = StepBatches(crops, seed=5, micro_batch=8, input_noise=2.0, classes=256)
    jittered, same_targets, _, _, _, _ = noisy[n]
    assert torch.equal(targets, same_targets)
    moved = silence_moved = 0
    for b, (c, start) in enumerate(picks(n)):
        lo = start - 31 - 1  # file position of inputs[b, 0]
        noised = np.zeros(131, dtype=bool)
        noised[: min(len(clips[c]) - lo, 131)] = True
        row, clean = jittered[0, b].numpy(), inputs[0, b].numpy()
        assert np.array_equal(row[~noised], clean[~noised])  # padding exact
        assert row.min() >= 0 and row.max() <= 255
        assert np.abs(row[noised] - clean[noised]).max() <= 12
        moved += int((row[noised] != clean[noised]).sum())
        silence_moved += int((row[: max(-lo, 0)] != 128).sum())
    assert moved > 0.4 * (jittered[0] != 128).sum() and silence_moved > 0
    halves = [StepBatches(crops, 5, 4, rank=r, world=2, input_noise=2.0)[n][0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves, dim=1), jittered)  # rank r: rows 4r .. 4r+3
    assert torch.equal(noisy[n][0], jittered)  # the same batch again: the same noise
    assert torch.equal(StepBatches(crops, 5, 8, input_noise=0.0)[n][0], inputs)


def test_own_draws_replace_only_chosen_target_values_and_are_the_same_for_any_world():
    """train.own_draws: the batch says which targets' values the trainer replaces in the
    inputs (a share p of them) and the uniforms of their draws; drawn last, so the crops are
    those without it, the same again for the same batch, and each process of a 2-process
    run gets its rows. ``replace_with_draws`` changes the input that holds a chosen target's
    value (context + 1 + i) and nothing else: not the context, not the padding past a
    clip's end, not the targets."""
    clips = [Clip("long", np.full(3000, 250, dtype=np.uint8)),
             Clip("short", np.full(40, 3, dtype=np.uint8))]  # always padded past its end
    crops = CropSampler(clips, context=31, segment_length=100, pad=128, start_share=0.5)
    # a batch with a crop of the short clip
    n = next(n for n in range(200)
             if any(c == 1 for c, _ in crops.draw(8, np.random.default_rng([5, n]))))
    plain = StepBatches(crops, seed=5, micro_batch=8)[n]
    assert plain[5] is None
    mixed = StepBatches(crops, seed=5, micro_batch=8, own_draws=0.25)
    inputs, targets, _, _, _, own = mixed[n]
    assert torch.equal(inputs, plain[0]) and torch.equal(targets, plain[1])
    assert own.chosen.shape == own.uniforms.shape == (1, 8, 100)
    assert 0.15 < own.chosen.float().mean() < 0.35
    assert 0 <= own.uniforms.min() and own.uniforms.max() < 1 and own.uniforms.std() > 0.2
    again = mixed[n][5]
    assert torch.equal(again.chosen, own.chosen) and torch.equal(again.uniforms, own.uniforms)
    halves = [StepBatches(crops, 5, 4, rank=r, world=2, own_draws=0.25)[n][5] for r in (0, 1)]
    assert torch.equal(torch.cat([h.chosen for h in halves], dim=1), own.chosen)
    assert torch.equal(torch.cat([h.uniforms for h in halves], dim=1), own.uniforms)

    x, y, chosen = inputs[0], targets[0], own.chosen[0]
    draws = torch.full_like(y, 7)  # a value no clip holds
    out = replace_with_draws(x, y, draws, chosen)
    assert torch.equal(x, inputs[0])  # a copy
    assert torch.equal(out[:, :32], x[:, :32])  # the context and the first target's input
    replaced = out != x
    expect = torch.zeros_like(replaced)
    expect[:, 32:] = chosen[:, :-1] & (y[:, :-1] != IGNORE)
    assert torch.equal(replaced, expect) and bool((out[replaced] == 7).all())
    assert int(expect.sum()) > 0 and bool(((y == IGNORE) & chosen).any())  # padding met
    everything = replace_with_draws(x, y, draws, torch.ones_like(chosen))
    assert torch.equal(everything[:, 32:] == 7, y[:, :-1] != IGNORE)


def test_a_validation_folder_is_never_trained_on(tmp_path):
    """`data.root=music data.val_root=music/held_out`: the training scan took the held-out
    files too, so validation scored audio the model trained on. The validation folder is
    now left out of training, with a training file that is a copy of a held-out one; a
    validation folder that holds the training folder is refused."""
    import shutil

    from wavegen.config import DataConfig
    from wavegen.data import build_datasets

    root = make_folder(tmp_path / "music", n=4)
    held = root / "held_out"
    write(held / "h0.wav", tone(0.3, freq=1200, seed=20))
    shutil.copy(root / "sub1" / "clip1.wav", held / "h1.wav")
    cfg = DataConfig(kind="folder", root=str(root), val_root=str(held), top_db=None,
                     cache_dir=str(tmp_path / "cache"))
    train, val, summary = build_datasets(cfg, Codec(256))
    assert sorted(c.name for c in val) == ["h0.wav", "h1.wav"]
    assert sorted(c.name for c in train) == ["sub0/clip0.wav", "sub0/clip2.wav",
                                             "sub1/clip3.wav"]
    for bad in (root, tmp_path):
        cfg.val_root = str(bad)
        with pytest.raises(DataError, match=f"data.val_root={bad} (is|holds) data.root"):
            build_datasets(cfg, Codec(256))


def _augmentation_crops():
    """A loud clip, a quiet one and one shorter than a crop, with crops that start at a
    clip's first sample (silence before it) and run past its end (padding, IGNORE)."""
    t = np.arange(6000)
    loud = mulaw.encode(torch.from_numpy(0.99 * np.sin(t / 5.0)).float()).numpy()
    quiet = mulaw.encode(torch.from_numpy(0.05 * np.sin(t / 3.0)).float()).numpy()
    clips = [Clip("loud", loud), Clip("quiet", quiet), Clip("short", quiet[:60])]
    return clips, CropSampler(clips, context=31, segment_length=200, pad=128, start_share=0.3)


def test_augmentation_maps_only_the_file_values_and_never_clips():
    """data.gain_db / data.polarity: each crop's values from its file go through one class
    map (inputs and targets alike): with polarity 1 the decoded crop is minus the original,
    with a gain it is the original times one factor within +-gain_db dB (to mu-law
    rounding), never past full scale; the silence before a file, the padding past its end
    and IGNORE targets stay; off, the batches are those of before (no draws)."""
    clips, crops = _augmentation_crops()
    n = next(n for n in range(200) if {0, 1, 2} <= {k for k, _ in crops.draw(
        8, np.random.default_rng([5, n]))} and (0, 0) in crops.draw(8, np.random.default_rng(
            [5, n])))
    picks = crops.draw(8, np.random.default_rng([5, n]))
    inputs, targets, _, _, _, _ = StepBatches(crops, seed=5, micro_batch=8)[n]
    off = StepBatches(crops, 5, 8, augmentation=Augmentation(0.0, 0.0))[n]
    assert torch.equal(off[0], inputs) and torch.equal(off[1], targets)

    def file_parts(b, k, start):
        lo = start - 32  # file position of inputs[b, 0]
        own = np.zeros(231, dtype=bool)
        own[max(-lo, 0) : max(len(clips[k]) - lo, 0)] = True
        return own, min(len(clips[k]) - start, 200)

    flipped, flipped_targets, _, _, _, _ = StepBatches(
        crops, 5, 8, augmentation=Augmentation(0.0, 1.0))[n]
    for b, (k, start) in enumerate(picks):
        own, t = file_parts(b, k, start)
        row, clean = flipped[0, b], inputs[0, b]
        assert torch.equal(row[own], 255 - clean[own])  # the mirror of each value:
        assert torch.allclose(mulaw.decode(row[own]), -mulaw.decode(clean[own]), atol=1e-7)
        assert torch.equal(row[~own], clean[~own])  # silence before, padding after
        assert torch.equal(flipped_targets[0, b, :t], 255 - targets[0, b, :t])
        assert torch.equal(flipped_targets[0, b, t:], targets[0, b, t:])  # IGNORE

    gained, gained_targets, _, _, _, _ = StepBatches(
        crops, 5, 8, augmentation=Augmentation(6.0, 0.0))[n]
    factors = []
    for b, (k, start) in enumerate(picks):
        own, t = file_parts(b, k, start)
        clean = mulaw.decode(inputs[0, b][own]).double()
        moved = mulaw.decode(gained[0, b][own]).double()
        big = clean.abs() > 0.02
        factor = float((moved[big] / clean[big]).median())
        factors.append(factor)
        assert torch.allclose(moved[big], factor * clean[big], rtol=0.08)
        assert 10 ** (-6.2 / 20) <= factor <= 10 ** (6.2 / 20)
        if k == 0:  # at full scale already: never louder
            assert factor <= 1.0
        assert torch.equal(gained[0, b][~own], inputs[0, b][~own])
        assert torch.equal(gained_targets[0, b, t:], targets[0, b, t:])
    assert max(factors) > 1.1 and min(factors) < 0.9  # louder and quieter crops both
    halves = [StepBatches(crops, 5, 4, rank=r, world=2,
                          augmentation=Augmentation(6.0, 0.5))[n][0] for r in (0, 1)]
    both = StepBatches(crops, 5, 8, augmentation=Augmentation(6.0, 0.5))[n][0]
    assert torch.equal(torch.cat(halves, dim=1), both)  # the same crops for any world

