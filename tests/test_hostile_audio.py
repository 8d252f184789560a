"""Hostile or damaged audio files: each is skipped (training) or an error record (scoring)
with a plain reason, counted, and never aborts the run."""

from __future__ import annotations

import logging
import os
import re
import struct

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write

from wavegen.audio import AudioError, load_audio, read_blocks
from wavegen.cli import recordings
from wavegen.data import AudioFolder, DataError, Preprocessing
from wavegen.family import Codec

PREP = Preprocessing(16000, Codec(256), None, False, 0.95)


def wav_claiming(path, rate: int, frames_present: int, frames_claimed: int | None = None):
    """A 16-bit mono WAV whose header says ``rate`` and ``frames_claimed`` frames."""
    data = (np.sin(np.arange(frames_present) / 5) * 8000).astype("<i2").tobytes()
    claimed = 2 * (frames_claimed if frames_claimed is not None else frames_present)
    header = b"RIFF" + struct.pack("<I", 36 + claimed) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", claimed)
    path.write_bytes(header + data)
    return path


@pytest.mark.parametrize("rate", [1, 2_000_000_000])
def test_a_header_claiming_an_absurd_rate_is_refused(tmp_path, rate):
    path = wav_claiming(tmp_path / "odd.wav", rate, 4000)
    with pytest.raises(AudioError, match=f"claims a sample rate of {rate} Hz"):
        load_audio(path, 16000)
    with pytest.raises(AudioError, match="claims a sample rate"):
        list(read_blocks(path, 16000))


def test_unreadable_files_say_why(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav", 16000)
    os.symlink(tmp_path / "nowhere.wav", tmp_path / "dangling.wav")
    with pytest.raises(AudioError, match="a link that dangles or loops"):
        load_audio(tmp_path / "dangling.wav", 16000)
    (tmp_path / "takes.wav").mkdir()
    with pytest.raises(AudioError, match="a folder, not an audio file"):
        load_audio(tmp_path / "takes.wav", 16000)
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path / "locked.wav", tone(0.1))
        locked.chmod(0)
        with pytest.raises(AudioError, match="permission denied"):
            load_audio(locked, 16000)
    # libsndfile says "File does not exist or is not a regular file" of text named .mp3
    (tmp_path / "notes.mp3").write_text("not a song\n" * 20)
    with pytest.raises(AudioError) as caught:
        load_audio(tmp_path / "notes.mp3", 16000)
    assert "does not exist" not in str(caught.value)
    assert str(caught.value) == (f"{tmp_path / 'notes.mp3'}: cannot read audio (its contents "
                                 "are in no audio format libsndfile knows)")


def test_truncated_and_clipped_files_are_used_with_a_line(tmp_path, caplog):
    path = wav_claiming(tmp_path / "cut.wav", 16000, 500, frames_claimed=87478)
    with caplog.at_level(logging.WARNING):
        audio = load_audio(path, 16000)
    assert len(audio) == 500 and "header promises 87478 frames, 500 are there" in caplog.text
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.full(1000, 45.0, np.float32), 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        assert load_audio(loud, 16000).max() == 1.0
    assert "1000 samples outside [-1, 1] (peak 45) are clipped" in caplog.text


def unsized_wav(path, data: bytes, rate: int = 16000, channels: int = 1):
    """A 16-bit WAV whose size fields say 0xFFFFFFFF, as libsndfile and ffmpeg write one
    past 4 GiB, and ffmpeg one to a pipe."""
    header = b"RIFF\xff\xff\xff\xffWAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    path.write_bytes(header + b"data\xff\xff\xff\xff" + data)
    return path


def test_a_wav_whose_header_cannot_count_its_data_is_read_to_its_end(tmp_path, caplog):
    """A WAV written past 4 GiB says 0xFFFFFFFF for its sizes, and libsndfile stops reading
    it at 4 GiB: an 8-hour 44.1 kHz stereo recording was trained on as 405.8 minutes, the
    rest dropped without a word. A small one (ffmpeg to a pipe) was read whole but said to
    be truncated ("its header promises 2147483647 frames"). Both are read to the end of the
    file, without a warning."""
    values = (np.sin(np.arange(16000) / 5) * 8000).astype("<i2")
    small = unsized_wav(tmp_path / "piped.wav", values.tobytes())
    with caplog.at_level(logging.WARNING):
        audio = load_audio(small, 16000)
    assert np.array_equal(audio, values / np.float32(32768)) and not caplog.text

    # past 4 GiB (a sparse file: its disk use is the two ends): the frames to the end
    big = unsized_wav(tmp_path / "long.wav", b"", rate=44100, channels=2)
    frames = (1 << 32) // 4 + 44100  # one second more than libsndfile would read
    with open(big, "r+b") as f:
        f.truncate(44 + 4 * frames)
        f.seek(44 + 4 * (frames - 3))
        f.write(np.array([[1000, -1000], [2000, -2000], [3000, -3000]], "<i2").tobytes())
    from pathlib import Path

    from wavegen.audio import open_frames, open_info

    info = open_info(Path(big))
    assert info.frames == frames and sf.info(big).frames < frames - 44100
    with open_frames(Path(big), info) as snd:
        assert snd.frames == frames
        snd.seek(frames - 4)
        assert snd.read(dtype="int16").tolist() == [[0, 0], [1000, -1000], [2000, -2000],
                                                    [3000, -3000]]


def test_a_long_clipped_file_says_so_in_one_line_not_one_per_block(tmp_path, caplog):
    """Streamed reading (scoring, and now every decode) warned once per 30 s block: a
    clipped recording of an hour gave 120 lines. One line per file, with the totals."""
    loud = np.full(4800, 0.5, np.float32)
    loud[::3] = 2.0  # 1600 samples over full scale, in each of the three blocks below
    loud[4000] = 7.5
    path = tmp_path / "loud.wav"
    sf.write(path, loud, 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING):
        blocks = list(read_blocks(path, 16000, block_seconds=0.1))
    assert len(blocks) == 3
    lines = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
    assert lines == [f"{path}: 1601 samples outside [-1, 1] (peak 7.5) are clipped"]


def test_a_folder_with_hostile_files_trains_on_the_rest_and_counts_them(tmp_path, caplog):
    root = tmp_path / "audio"
    write(root / "good.wav", tone(0.3))
    wav_claiming(root / "one_hertz.wav", 1, 4000)
    os.symlink(root / "gone.wav", root / "dangling.wav")
    os.symlink(root / "loop.wav", root / "loop.wav")
    with caplog.at_level(logging.WARNING):
        folder = AudioFolder(root, PREP, tmp_path / "cache")
    assert [c.name for c in folder.clips] == ["good.wav"]
    reasons = dict((p.name, why) for p, why in folder.report.skipped)
    assert "claims a sample rate of 1 Hz" in reasons["one_hertz.wav"]
    assert "dangles or loops" in reasons["dangling.wav"]
    assert "dangles or loops" in reasons["loop.wav"]
    assert "3 skipped" in folder.report.summary()


def test_files_in_formats_that_cannot_be_read_are_counted_and_said(tmp_path, caplog, capsys):
    """A folder of phone recordings (.m4a: AAC, which libsndfile does not read) beside a few
    .wav files trained on the .wav files alone without a word, and a folder of only .m4a
    said "no audio files". Both now say how many files of which formats were left out,
    and how to convert them; `wavegen score FOLDER` too."""
    root = tmp_path / "audio"
    write(root / "good.wav", tone(0.3))
    for name in ("a.m4a", "b.M4A", "sub/c.wma", "._d.m4a"):  # ._ : macOS metadata, not audio
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\0\0\0\x20ftypM4A ")
    note = "3 files in formats wavegen cannot read (2 .m4a, 1 .wma): convert them"
    with caplog.at_level(logging.WARNING):
        folder = AudioFolder(root, PREP, tmp_path / "cache")
    assert [c.name for c in folder.clips] == ["good.wav"]
    assert f"leaving out {root}: {note} to use them (e.g. ffmpeg -i in.m4a out.flac)" \
        in caplog.text
    (root / "good.wav").unlink()
    with pytest.raises(DataError, match=f"no audio files it can read, and {re.escape(note)}"):
        AudioFolder(root, PREP, tmp_path / "cache")
    assert recordings([str(root)], "score") == []  # what score, quality, vocode take
    assert f"wavegen score: leaving out {note}" in capsys.readouterr().err


def test_files_recorded_below_the_training_rate_are_counted(tmp_path, caplog):
    """Phone recordings (8 kHz) among 16 kHz files were upsampled without a word, and the
    model learnt their empty upper band."""
    root = tmp_path / "audio"
    write(root / "native.wav", tone(0.3))
    sf.write(root / "phone.wav", tone(0.3, sample_rate=8000), 8000)
    sf.write(root / "cd.wav", tone(0.3, sample_rate=44100), 44100)
    with caplog.at_level(logging.WARNING):
        folder = AudioFolder(root, PREP, tmp_path / "cache")
    assert [p.name for p, _ in folder.report.upsampled] == ["phone.wav"]
    assert (f"1 of the 3 files in {root} was recorded below data.sample_rate=16000 (8000 Hz; "
            f"e.g. phone.wav), upsampled: nothing lies above half its rate") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # read from the cache: the same line
        AudioFolder(root, PREP, tmp_path / "cache")
    assert "was recorded below data.sample_rate=16000 (8000 Hz" in caplog.text


def test_a_file_that_changes_while_it_is_read_is_not_cached(tmp_path, monkeypatch):
    import wavegen.data as data

    root = tmp_path / "audio"
    path = write(root / "growing.wav", tone(0.3))
    write(root / "other.wav", tone(0.3, freq=300))
    original = data.load_audio

    def load_while_appending(p, *args, **kwargs):
        out = original(p, *args, **kwargs)
        if p.name == "growing.wav":
            os.utime(p, ns=(1, 1))  # as if more data arrived while it was decoded
        return out

    monkeypatch.setattr(data, "load_audio", load_while_appending)
    folder = AudioFolder(root, PREP, tmp_path / "cache")
    assert [c.name for c in folder.clips] == ["other.wav"]
    assert "changed while it was read" in dict(folder.report.skipped)[path]
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_folder_of_links_to_folders_is_searched_and_a_link_loop_ends(tmp_path):
    """A training folder made of links to the user's folders (``ln -s ~/music/piano``) is
    searched through them, labels come from the link's name, and a link back up the tree is
    followed once."""
    from wavegen.paths import expand_paths

    store = tmp_path / "store"
    write(store / "p" / "a.wav", tone(0.3))
    write(store / "o" / "b.wav", tone(0.3, freq=300))
    root = tmp_path / "audio"
    root.mkdir()
    os.symlink(store / "p", root / "piano")
    os.symlink(store / "o", root / "organ")
    os.symlink(root, root / "piano_again")  # a loop: audio/piano_again -> audio
    folder = AudioFolder(root, PREP, tmp_path / "cache", labels="folder")
    assert [(c.name, c.label) for c in folder.clips] == [("organ/b.wav", "organ"),
                                                          ("piano/a.wav", "piano")]
    assert [p.relative_to(root).as_posix() for p in expand_paths([root])] == [
        "organ/b.wav", "piano/a.wav"]
