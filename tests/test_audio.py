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


# ---- long files: decoded in memory proportional to the output, with the same values


def whole_file_pipeline(path: Path, sample_rate: int, top_db: float | None,
                        normalize: bool, peak: float = 0.95) -> np.ndarray:
    """What decoding a file meant before it was streamed: read whole, mix, resample, trim,
    normalise, clip (the slow reference)."""
    import librosa

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = data.mean(axis=1)
    if rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=sample_rate,
                                 res_type="soxr_hq").astype(np.float32)
    if top_db is not None:
        audio, _ = librosa.effects.trim(audio, top_db=top_db)
    if normalize:
        audio = audio * np.float32(peak / float(np.abs(audio).max()))
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def fading(seconds: float, sample_rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """(T, C) float32: quiet lead-in and tail around a tone with noise (trimming has work)."""
    x = np.stack([tone(seconds, sample_rate, 330.0 + 110 * c, seed=seed + c)
                  for c in range(channels)], axis=1)
    n, tail = len(x), len(x) // 6
    x[: n // 5] *= 1e-4
    x[n - tail :] *= np.geomspace(1e-2, 1e-5, tail)[:, None].astype(np.float32)
    return x


@pytest.mark.parametrize("rate,seconds,top_db,normalize", [
    (44100, 3.00002, 60.0, False), (48000, 2.5, 40.0, True), (22050, 1.0, None, False),
    (16000, 2.0, 60.0, True), (11025, 0.0001, None, False), (8000, 40.1, 60.0, False)])
def test_decoding_in_blocks_gives_the_whole_file_pipelines_values(tmp_path, rate, seconds,
                                                                  top_db, normalize):
    """Streamed decoding (blocks, streaming resampler, trimming measured in chunks) returns
    the values and the length that reading the file whole gave, lengths whose rate ratio
    leaves a fraction included (librosa's ceiling)."""
    path = write(tmp_path / "f.wav", fading(seconds, rate), rate, subtype="FLOAT")
    expected = whole_file_pipeline(path, 16000, top_db, normalize)
    got = load_audio(path, 16000, top_db=top_db, normalize=normalize)
    assert got.dtype == np.float32 and np.array_equal(got, expected)


def test_silence_is_trimmed_as_librosa_does_across_measuring_chunks():
    import librosa

    from wavegen.audio import frame_rms, trim_silence

    rng = np.random.default_rng(3)
    for n in [1, 511, 512, 2048, 1024 * 512 - 1, 1024 * 512 + 700, 1_300_000]:
        x = (rng.standard_normal(n) * np.geomspace(1e-6, 1, n)[::-1]
             * np.geomspace(1e-3, 1, n)).astype(np.float32)
        assert np.array_equal(frame_rms(x, chunk_frames=3), librosa.feature.rms(y=x)[0])
        for top_db in (20, 60):
            assert np.array_equal(trim_silence(x, top_db),
                                  librosa.effects.trim(x, top_db=top_db)[0]), (n, top_db)


def test_encoding_in_blocks_gives_the_values_of_one_call():
    from wavegen.family import Codec

    x = fading(0.3, 16000, channels=1)[:, 0]
    for channels in (256, 65536):
        codec = Codec(channels)
        whole = codec.encode(x).numpy().astype(codec.dtype)
        assert np.array_equal(codec.encode_array(x, block=777), whole)


def test_a_long_file_is_decoded_in_memory_of_its_output_not_of_the_file(tmp_path):
    """A file of hours (a recording, an audiobook) was read whole as float32 at its own rate
    and channels, mixed, resampled and trimmed in copies: about 2.4 GB per hour of 44.1 kHz
    stereo (an 8-hour file took 19 GB to cache), so a long file met the kernel's
    out-of-memory killer. Each extra second of a file may now cost only its samples at the
    model's rate (4 bytes each), whatever the file's rate and channels."""
    import tracemalloc

    def peak_bytes(seconds: float) -> int:
        path = write(tmp_path / f"{seconds}.wav", fading(seconds, 48000), 48000)
        tracemalloc.start()
        try:
            load_audio(path, 16000, top_db=60.0, normalize=True)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak_bytes(1.0)  # librosa's first trim allocates its caches once
    short, long = peak_bytes(95.0), peak_bytes(155.0)  # read in 30 s blocks, 3+ whole
    per_sample = (long - short) / (60.0 * 16000)
    assert per_sample < 6.0, f"{per_sample:.1f} bytes per extra output sample"
