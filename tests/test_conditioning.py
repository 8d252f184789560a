"""Global conditioning p(x | c): the streaming engine, the numba loop and the scorer equal
the parallel forward with mixed labels in one batch; labels come from sub-folders or a
manifest; the "no label" entry is the unconditional score; classification by likelihood."""

import logging
import os

import numpy as np
import pytest
import torch
from conftest import compose_config, randomize_biases, run_wavegen, tone, write

from wavegen import WaveNet, generate, load_checkpoint, score_file
from wavegen.classify import classify_file, confusion, labelled_paths
from wavegen.data import AudioFolder, DataError, Preprocessing, read_manifest
from wavegen.family import Codec
from wavegen.models.wavenet import streaming
from wavegen.models.wavenet.fastcpu import FastCPUEngine
from wavegen.scoring import StreamScorer, score_audio, score_files
from wavegen.train import train

LABELS = ["organ", "piano", "voice"]


def conditional_model(**overrides) -> WaveNet:
    model = WaveNet.from_preset("tiny", labels=LABELS, **overrides).eval()
    randomize_biases(model)
    with torch.no_grad():  # labels that matter: large enough to move every layer
        model.label_embed.weight.normal_(0, 1.0)
    return model


def teacher_forced(model, state, inputs, tile):
    return torch.cat([streaming.step(model, state, inputs[:, i : i + tile])
                      for i in range(0, inputs.shape[1], tile)], dim=1)


@pytest.mark.parametrize("kernel_size", [2, 3])
@pytest.mark.parametrize("tile", [1, 7, 512])
def test_streaming_tiles_equal_parallel_forward_with_mixed_labels(kernel_size, tile):
    model = conditional_model(kernel_size=kernel_size)
    labels = torch.tensor([1, 3, 0])  # piano-, voice- and no-label streams in one batch
    x = torch.randint(0, 256, (3, 300 if tile == 1 else 1100))
    with torch.no_grad():
        expected = model(x, labels).transpose(1, 2)
        others = model(x, torch.tensor([2, 2, 2])).transpose(1, 2)
    assert (expected - others).abs().max() > 0.1  # the labels change the predictions
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :]
    state = streaming.silence_state(model, 3, labels)
    first = teacher_forced(model, state, inputs[:, :200], tile)
    streaming.prime(model, state, inputs[:, 200:250])  # priming keeps the labels
    rest = teacher_forced(model, state, inputs[:, 250:], tile)
    assert torch.allclose(first, expected[:, :200], atol=1e-4)
    assert torch.allclose(rest, expected[:, 250:], atol=1e-4)


def test_numba_loop_equals_parallel_forward_with_mixed_labels():
    model = conditional_model()
    labels = torch.tensor([2, 0, 1, 3])
    x = torch.randint(0, 256, (4, 200))
    with torch.no_grad():
        expected = model(x, labels).transpose(1, 2).numpy()
    inputs = model.shift_with_silence(x)[:, model.receptive_field - 1 :].numpy()
    engine = FastCPUEngine(model, 4, threads=2, entries=labels)
    np.testing.assert_allclose(engine.feed(inputs), expected, atol=1e-4)


def test_scoring_is_exact_under_each_label_and_no_label_is_entry_zero():
    model = conditional_model()
    audio = tone(0.2, freq=330)
    record = score_audio(model, audio, 16000)  # no label
    x = torch.from_numpy(np.asarray(_classes(model, audio))).view(1, -1)
    with torch.no_grad():
        for label, entry in ((None, 0), ("piano", 2), ("voice", 3)):
            exact = model.log_prob(x, torch.tensor([entry])).double().sum().item()
            got = score_audio(model, audio, 16000, label=label)["log_prob_nats"]
            assert got == pytest.approx(exact, rel=1e-6)
        # an unconditional call of the same model is the "no label" entry
        assert record["log_prob_nats"] == pytest.approx(model.log_prob(x).double().sum().item(),
                                                        rel=1e-6)
    rows = StreamScorer(model, tile=64, labels=LABELS)
    rows.add(x[0])
    for i, label in enumerate(LABELS):
        assert rows.row_nats[i] == pytest.approx(
            score_audio(model, audio, 16000, label=label)["log_prob_nats"], rel=1e-6)


def test_classification_over_many_labels_holds_one_tile_of_values_per_call(monkeypatch):
    """Every label is a row of the engine: a call carries ``tile`` values over all the rows,
    not per row (with 100 labels of `small`, a 8192-value tile per row peaked at 16 GB, and
    a few hundred speakers' labels met the out-of-memory killer), with the same figures."""
    import wavegen.scoring

    labels = [f"speaker{i:02d}" for i in range(20)]
    torch.manual_seed(0)
    model = WaveNet.from_preset("tiny", labels=labels).eval()
    x = np.random.default_rng(0).integers(0, 256, 3000)
    calls = []
    original = wavegen.scoring.score_tile

    def spy(scorer, rows, *args):
        calls.append(sum(len(r) for r in rows))
        return original(scorer, rows, *args)

    monkeypatch.setattr(wavegen.scoring, "score_tile", spy)
    rows = StreamScorer(model, tile=400, labels=labels)
    rows.add(x)
    assert max(calls) <= 400 and len(calls) == 150
    alone = StreamScorer(model, tile=400, labels=labels[7:8])
    alone.add(x)
    assert rows.row_nats[7] == pytest.approx(alone.log_prob_nats, rel=1e-9)


def test_batched_file_scoring_with_a_label(tmp_path):
    model = conditional_model()
    paths = [write(tmp_path / f"c{i}.wav", tone(0.1 + 0.05 * i, freq=200 + 100 * i, seed=i))
             for i in range(5)]
    batched = list(score_files(model, paths, batch=2, tile=100, label="organ"))
    for path, record in zip(paths, batched, strict=True):
        single = score_file(model, path, label="organ")
        assert record["log_prob_nats"] == pytest.approx(single["log_prob_nats"], rel=1e-6)


def test_label_errors_name_the_known_labels():
    model = conditional_model()
    with pytest.raises(ValueError, match="unknown label 'drums'.*organ, piano, voice"):
        generate(model, num_samples=4, label="drums")
    with pytest.raises(ValueError, match="2 labels for 3 streams"):
        generate(model, n=3, num_samples=4, label=["organ", "piano"])
    plain = WaveNet.from_preset("tiny")
    with pytest.raises(ValueError, match="unconditional"):
        generate(plain, num_samples=4, label="organ")
    with pytest.raises(ValueError, match="conditional model"):
        classify_file(plain, "unused.wav")


def test_generation_streams_carry_their_own_labels():
    model = conditional_model()
    mixed = generate(model, n=3, num_samples=50, seed=1, temperature=0,
                     label=["organ", "voice", "organ"])
    for i, label in enumerate(["organ", "voice", "organ"]):
        alone = generate(model, n=1, num_samples=50, seed=1, temperature=0, label=label)
        assert torch.equal(mixed[i], alone[0])
    assert not torch.equal(mixed[0], mixed[1])
    for backend in ("torch", "numba"):
        assert torch.equal(generate(model, n=3, num_samples=50, temperature=0, backend=backend,
                                    label=["organ", "voice", "organ"]), mixed)
    prime = torch.rand(300).numpy() * 2 - 1
    # one label: the numba backend primes once through the torch engine; two: per stream
    for labels in (["voice", "voice"], ["organ", "voice"]):
        primed = [generate(model, n=2, num_samples=40, temperature=0, backend=backend,
                           prime=prime, label=labels) for backend in ("torch", "numba")]
        assert torch.equal(primed[0], primed[1])


def test_labels_from_sub_folders_and_from_a_manifest(tmp_path):
    root = tmp_path / "audio"
    for label in ("low", "high"):
        for i in range(2):
            write(root / label / "take" / f"{label}{i}.wav",
                  tone(0.2, seed=i + (10 if label == "high" else 0)))  # not copies
    write(root / "loose.wav", tone(0.2, seed=99))
    prep = Preprocessing(16000, Codec(256), None, False, 0.95)
    folder = AudioFolder(root, prep, tmp_path / "cache", labels="folder")
    assert sorted((c.name, c.label) for c in folder.clips)[0] == ("high/take/high0.wav", "high")
    assert {c.label for c in folder.clips} == {"low", "high"}
    assert [p.name for p, _ in folder.report.skipped] == ["loose.wav"]

    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"path,label\nloose.wav,solo\n{root / 'low/take/low0.wav'},low\n")
    folder = AudioFolder(root, prep, tmp_path / "cache", labels=str(manifest))
    assert sorted((c.name, c.label) for c in folder.clips) == [("loose.wav", "solo"),
                                                               ("low/take/low0.wav", "low")]
    assert len(folder.report.skipped) == 3  # files the manifest does not list
    manifest.write_text("path,label\nloose.wav\n")
    with pytest.raises(DataError, match="labels.csv, row 2"):
        AudioFolder(root, prep, tmp_path / "cache", labels=str(manifest))
    with pytest.raises(DataError, match="does not exist"):
        AudioFolder(root, prep, tmp_path / "cache", labels=str(tmp_path / "nope.csv"))

    assert [t for _, t in labelled_paths([str(root)], ["low", "high"])] == [
        "high", "high", None, "low", "low"]
    assert [t for _, t in labelled_paths([str(root / "low")], ["low"])] == ["low", "low"]
    assert labelled_paths([str(root / "low/take/low1.wav")], ["take"])[0][1] == "take"


@pytest.mark.parametrize("written_as", ["excel utf-8", "excel windows", "semicolons",
                                        "tabs", "windows paths", "old archive"])
def test_a_manifest_as_spreadsheets_write_it_is_read_as_meant(tmp_path, written_as):
    """Each of these lost files or stopped the run: a byte-order mark made the first row's
    file "not exist" (dropped with a line naming a path that does exist); Windows-1252 text
    raised UnicodeDecodeError with a traceback; semicolons or tabs between the columns and
    backslashes in the paths were "expected 'path,label'" or named no existing file. An old
    archive: the manifest and the file's name on disk both in Latin-1 bytes."""
    root = tmp_path / "audio"
    cafe = os.fsdecode("café.wav".encode("latin-1")) if written_as == "old archive" \
        else "café.wav"
    for name in ("a.wav", cafe):  # soundfile takes no name that is not UTF-8: renamed
        os.rename(write(root / "piano" / "new.wav", tone(0.05)), root / "piano" / name)
    sep, slash = {"semicolons": ";", "tabs": "\t"}.get(written_as, ","), \
        "\\" if written_as == "windows paths" else "/"
    text = "".join(f"piano{slash}{name}{sep}{label}\r\n"
                   for name, label in (("a.wav", "rag"), ("café.wav", "polonaise")))
    data = {"excel utf-8": b"\xef\xbb\xbf" + text.encode(),
            "excel windows": ("path,label\r\n" + text).encode("cp1252"),
            "old archive": text.encode("latin-1")}.get(written_as, text.encode())
    (tmp_path / "labels.csv").write_bytes(data)
    assert {p.name: label for p, label in read_manifest(tmp_path / "labels.csv", root).items()} \
        == {"a.wav": "rag", cafe: "polonaise"}


def test_a_file_given_two_labels_by_a_manifest_is_an_error(tmp_path):
    """The later row's label won without a word: training taught the model a label the
    user had also given to other files."""
    write(tmp_path / "a.wav", tone(0.05))
    (tmp_path / "labels.csv").write_text("path,label\na.wav,piano\n./a.wav,organ\n")
    with pytest.raises(DataError, match=r"labels.csv, rows 2 and 3: .*a.wav is labelled "
                                        r"'piano' and 'organ'"):
        read_manifest(tmp_path / "labels.csv", tmp_path)


def test_rows_naming_missing_files_are_counted_past_the_first_few(tmp_path, caplog):
    """A manifest of 2,000 rows whose paths were relative to another folder logged 2,000
    lines, one per row, burying the rest of the start-up log."""
    write(tmp_path / "a.wav", tone(0.05))
    rows = "".join(f"elsewhere/{i}.wav,piano\n" for i in range(2000))
    (tmp_path / "labels.csv").write_text(f"path,label\na.wav,piano\n{rows}")
    caplog.set_level(logging.INFO, logger="wavegen")
    assert len(read_manifest(tmp_path / "labels.csv", tmp_path)) == 1
    assert caplog.text.count("does not exist (row ignored)") == 3
    assert "1997 more rows name files that do not exist (2000 in all, ignored)" in caplog.text


def test_files_without_a_label_are_counted_past_the_first_few(tmp_path, caplog):
    """A manifest labelling a few of a folder's files (or data.labels=folder over files
    outside sub-folders) logged a "skipping" line for every other file: thousands of lines
    for a large folder. The first few are named, the rest counted; the files are still
    skipped, and a file that cannot be read still gets its own line."""
    root = tmp_path / "audio"
    write(root / "piano" / "a.wav", tone(0.05))
    for i in range(10):
        write(root / f"loose{i}.wav", tone(0.05, seed=i + 1))
    (root / "piano" / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    prep = Preprocessing(16000, Codec(256), None, False, 0.95)
    caplog.set_level(logging.INFO, logger="wavegen")
    folder = AudioFolder(root, prep, tmp_path / "cache", labels="folder")
    assert [c.name for c in folder.clips] == ["piano/a.wav"]
    assert len(folder.report.skipped) == 11
    assert caplog.text.count("so it has no label") == 3
    assert "skipping 7 more files without a label (10 in all)" in caplog.text
    assert "skipping " + str(root / "piano" / "broken.wav") in caplog.text


def test_a_single_label_is_said_and_not_used_to_classify(tmp_path, caplog):
    """data.labels=folder over a folder whose files all sit in one sub-folder (audio/wavs/)
    trained a conditional model of one label without a word, and `score --classify`
    then gave every file that label with posterior 1: said at start-up, refused there."""
    for i in range(3):
        write(tmp_path / "audio" / "wavs" / f"a{i}.wav", tone(0.3, seed=i))
    cfg = compose_config(
        "model=tiny", "data=folder", f"data.root={tmp_path / 'audio'}", "data.labels=folder",
        f"data.cache_dir={tmp_path / 'cache'}", "data.segment_length=500",
        "data.top_db=null", "train.batch_size=2", "train.max_steps=1",
        "train.val_every=1000", "train.num_examples=0", "train.sample_check_clips=0",
        "optim.warmup_steps=0", f"out_dir={tmp_path}", "name=one")
    caplog.set_level(logging.INFO, logger="wavegen")
    summary = train(cfg)
    assert "one label: every training file is in the sub-folder 'wavs'" in caplog.text
    assert load_checkpoint(summary["checkpoint"]).labels == ["wavs"]
    result = run_wavegen("score", summary["checkpoint"], tmp_path / "audio", "--classify",
                         cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "knows one label ('wavs'), so every file would be given it" in result.stderr


def test_a_labelled_file_is_used_when_an_unlabelled_copy_comes_first(tmp_path):
    """The copy check ran before the labels: `song.wav` outside the manifest (or outside
    any sub-folder) came first, so the listed `piano/song.wav` was skipped as its copy and
    then `song.wav` as unlabelled: the file was lost, and a folder of such files was
    "unreadable"."""
    root = tmp_path / "audio"
    write(root / "piano" / "song.wav", tone(0.2, seed=1))
    write(root / "0song.wav", tone(0.2, seed=1))  # sorts first: the same bytes
    write(root / "piano" / "other.wav", tone(0.2, seed=2))
    prep = Preprocessing(16000, Codec(256), None, False, 0.95)
    (tmp_path / "labels.csv").write_text("piano/song.wav,piano\npiano/other.wav,piano\n")
    for labels in ("folder", str(tmp_path / "labels.csv")):
        folder = AudioFolder(root, prep, tmp_path / "cache", labels=labels)
        assert sorted((c.name, c.label) for c in folder.clips) == [
            ("piano/other.wav", "piano"), ("piano/song.wav", "piano")], labels
        assert [p.name for p, _ in folder.report.skipped] == ["0song.wav"]


def test_classify_leaves_out_clips_wavegen_wrote_below_a_folder(tmp_path):
    """`wavegen generate -o audio/low/generated --label low`, then `wavegen score --classify
    audio/`: `score` said it left the clips out, but classified them as recordings of
    "low" (accuracy over the model's own clips). They are left out; named, classified."""
    from wavegen.outputs import mark_output

    write(tmp_path / "audio" / "low" / "a.wav", tone(0.1, freq=150))
    made = write(tmp_path / "audio" / "low" / "generated" / "sample_000_low.wav",
                 tone(0.1, freq=150))
    mark_output(made.parent)
    found = labelled_paths([str(tmp_path / "audio")], ["low", "high"])
    assert [(p.name, t) for p, t in found] == [("a.wav", "low")]
    left_out = []
    labelled_paths([str(tmp_path / "audio")], ["low", "high"], left_out)
    assert left_out == [made.parent]
    assert [p.name for p, _ in labelled_paths([str(made.parent)], ["low"])] \
        == ["sample_000_low.wav"]


def _classes(model, audio):
    from wavegen import mulaw

    return mulaw.encode(torch.from_numpy(audio), model.quantization_channels).numpy()


def two_classes(root, count, seed):
    """'tone': the built-in synthetic music (harmonic notes, chords); 'noise': band-limited
    noise bursts. One second per file."""
    from wavegen.data import synthetic_audio

    rng = np.random.default_rng(seed)
    for i in range(count):
        write(root / "tone" / f"tone{i}.wav", synthetic_audio(1.0, 16000, seed * 1000 + i))
        noise = np.convolve(rng.standard_normal(16000), np.ones(3) / 3, mode="same")
        envelope = np.repeat(rng.uniform(0.05, 0.4, size=8), 2000)
        write(root / "noise" / f"noise{i}.wav", (envelope * noise).astype(np.float32))


@pytest.mark.slow
def test_conditional_training_classifies_and_generates_by_label(tmp_path):
    two_classes(tmp_path / "train", 6, seed=0)
    two_classes(tmp_path / "held_out", 6, seed=1)
    cfg = compose_config(
        "model=tiny", "model.layers_per_stack=5", "data=folder",
        f"data.root={tmp_path / 'train'}", "data.labels=folder",
        f"data.cache_dir={tmp_path / 'cache'}", "data.segment_length=500", "data.top_db=null",
        "train.batch_size=8", "train.max_steps=400", "train.val_every=1000",
        "train.num_examples=0", "train.sample_check_clips=0", "optim.lr=5e-3",
        "optim.warmup_steps=10",
        f"out_dir={tmp_path}", "name=cond")
    summary = train(cfg)
    assert set(summary["val_bits_per_sample_by_label"]) == {"noise", "tone"}
    model = load_checkpoint(summary["checkpoint"])
    assert model.labels == ["noise", "tone"] and model.label_prior == [0.5, 0.5]
    held_out = (tmp_path / "cond" / "validation_files.txt").read_text().split()
    assert len(held_out) == 2 and {os.path.basename(os.path.dirname(p)) for p in held_out} \
        == {"noise", "tone"}

    records = [dict(classify_file(model, path), true_label=truth)
               for path, truth in labelled_paths([str(tmp_path / "held_out")], model.labels)]
    matrix, known = confusion(records, model.labels)
    assert known == 12 and np.trace(matrix) / known >= 0.9, matrix
    for r in records:
        assert sum(v["posterior"] for v in r["labels"].values()) == pytest.approx(1.0)

    for label, other in (("tone", "noise"), ("noise", "tone")):
        audio = generate(model, n=2, num_samples=4000, seed=0, label=label).numpy()
        for clip in audio:
            own = score_audio(model, clip, 16000, label=label)["bits_per_sample"]
            assert own < score_audio(model, clip, 16000, label=other)["bits_per_sample"]
