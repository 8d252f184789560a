from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone, write

from wavegen.audio import AudioError, load_audio, write_wav


def peak_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(audio.size, 1 / sample_rate)[spectrum.argmax()])


@pytest.mark.parametrize("ext,subtype", [(".wav", "PCM_16"), (".wav", "PCM_24"),
                                         (".wav", "FLOAT"), (".flac", "PCM_16"),
                                         (".aiff", "PCM_16"), (".ogg", "VORBIS")])
def test_reads_formats(tmp_path, ext, subtype):
    x = tone(0.5)
    path = write(tmp_path / f"a{ext}", x, subtype=subtype)
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - x.size) <= 1100  # vorbis may pad
    if ext != ".ogg":
        assert np.abs(y - x).max() < 1e-3
    assert abs(peak_hz(y, 16000) - 440) < 5


def test_stereo_is_mixed_down(tmp_path):
    x = tone(0.25)
    path = write(tmp_path / "s.wav", np.stack([x, np.zeros_like(x)], axis=1), subtype="FLOAT")
    y = load_audio(path, 16000)
    assert np.allclose(y, x / 2, atol=1e-6)


def test_other_rates_are_resampled(tmp_path):
    path = write(tmp_path / "r.wav", tone(1.0, sample_rate=44100, freq=1000.0), 44100)
    y = load_audio(path, 16000)
    assert abs(y.size - 16000) <= 1
    assert abs(peak_hz(y, 16000) - 1000) < 3


def test_trimming_and_normalisation(tmp_path):
    x = np.concatenate([np.zeros(8000), tone(0.5), np.zeros(8000)]).astype(np.float32)
    path = write(tmp_path / "t.wav", x, subtype="FLOAT")
    assert load_audio(path, 16000).size == x.size  # top_db=None keeps everything
    trimmed = load_audio(path, 16000, top_db=40)
    assert 8000 <= trimmed.size <= 8000 + 2 * 2048  # frame-granular (2048-sample frames)
    normed = load_audio(path, 16000, normalize=True, peak=0.9)
    assert abs(np.abs(normed).max() - 0.9) < 1e-5


def bad_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = write(folder / "good.wav", tone(0.2))
    files = {
        "zero bytes": folder / "empty.wav",
        "truncated": folder / "truncated.wav",
        "not audio": folder / "notes.wav",
        "no samples": folder / "nosamples.wav",
        "silent": folder / "silent.wav",
        "nan": folder / "nan.wav",
    }
    files["zero bytes"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[:30])
    files["not audio"].write_text("this is not audio\n" * 20)
    write(files["no samples"], np.zeros(0, dtype=np.float32))
    write(files["silent"], np.zeros(4000, dtype=np.float32))
    nan = tone(0.1)
    nan[100] = np.nan
    write(files["nan"], nan, subtype="FLOAT")
    return files


@pytest.mark.parametrize("kind,cause", [("zero bytes", r"an empty file \(0 bytes\)"),
                                        ("truncated", "cannot read"),
                                        ("not audio", "cannot read"),
                                        ("no samples", "no audio samples"),
                                        ("silent", "nothing left after trimming"),
                                        ("nan", "NaN")])
def test_bad_files_raise_audio_error_naming_the_path(tmp_path, kind, cause):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(AudioError, match=cause) as info:
        load_audio(path, 16000, top_db=60)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav", 16000)


def test_write_wav_is_pcm16_at_the_rate(tmp_path):
    path = tmp_path / "deep" / "out.wav"
    write_wav(path, np.array([0.0, 0.5, -1.5]), 8000)
    info = sf.info(path)
    assert (info.samplerate, info.subtype, info.frames) == (8000, "PCM_16", 3)
    assert np.allclose(sf.read(path)[0], [0.0, 0.5, -1.0], atol=1e-4)
