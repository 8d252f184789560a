import pytest
import torch

from wavegen import mulaw


@pytest.mark.parametrize("q", [256, 16, 1024])
def test_classes_round_trip_exactly(q):
    classes = torch.arange(q)
    assert torch.equal(mulaw.encode(mulaw.decode(classes, q), q), classes)


def test_audio_round_trip_within_a_quantization_step():
    x = torch.linspace(-1, 1, 10001)
    y = mulaw.decode(mulaw.encode(x, 256), 256)
    # mu-law steps are finest near 0 and coarsest near +-1 (about 0.031 at full scale)
    assert (y - x).abs().max() < 0.032
    small = x.abs() < 0.01
    assert (y - x)[small].abs().max() < 0.0005


def test_edge_values_and_silence():
    x = torch.tensor([-1.0, 0.0, 1.0, -5.0, 5.0])
    assert mulaw.encode(x, 256).tolist() == [0, 128, 255, 0, 255]
    assert mulaw.silence_class(256) == 128
    assert mulaw.encode(torch.zeros(3), 16).tolist() == [mulaw.silence_class(16)] * 3
    assert mulaw.decode(torch.tensor([0, 255]), 256).tolist() == [-1.0, 1.0]
    assert mulaw.encode(x, 256).dtype == torch.int64
    assert mulaw.decode(torch.tensor([3]), 256).dtype == torch.float32


def test_encode_rejects_integer_audio():
    with pytest.raises(TypeError, match="float"):
        mulaw.encode(torch.tensor([1, 2, 3]))


@pytest.mark.parametrize("q", [2, 3, 16, 255, 256, 257, 1024, 65536])
def test_the_silence_class_is_the_class_of_zero(q):
    assert mulaw.silence_class(q) == int(mulaw.encode(torch.zeros(1), q).item())
