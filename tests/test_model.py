import pytest
import torch
from conftest import randomize_biases

from wavegen import WaveNet, WaveNetConfig
from wavegen.models.wavenet.model import load_preset, receptive_field


def perturbation_delta(model: WaveNet, length: int, j: int) -> torch.Tensor:
    """Change x[j]; return |delta log_prob| per position (max over a batch of 2)."""
    x = torch.randint(0, model.quantization_channels, (2, length))
    y = x.clone()
    y[:, j] = (x[:, j] + 37) % model.quantization_channels
    with torch.no_grad():
        return (model.log_prob(x) - model.log_prob(y)).abs().amax(0)


def influencing_samples(model: WaveNet, x: torch.Tensor, t: int) -> list[int]:
    """The positions j < t whose input embedding has a non-zero gradient on log_prob[t]:
    exactly the samples the prediction of x[t] sees."""
    captured = {}

    def keep(module, args, out):
        out.retain_grad()
        captured["emb"] = out

    handle = model.embed.register_forward_hook(keep)
    try:
        model.log_prob(x)[0, t].backward()
    finally:
        handle.remove()
    grad = captured["emb"].grad[0].abs().sum(-1)  # over the shifted input positions
    # shifted input position p holds x[p - R] (R silence samples come first)
    return [p - model.receptive_field for p in grad.nonzero().flatten().tolist()
            if p >= model.receptive_field]


SHAPES = [
    ("tiny", {}),
    ("small", {}),
    ("base", {}),
    ("tiny", {"kernel_size": 3, "layers_per_stack": 5, "stacks": 2}),
    ("tiny", {"kernel_size": 4, "layers_per_stack": 3, "stacks": 2}),
]


@pytest.mark.parametrize("preset,overrides", SHAPES)
def test_causality_and_receptive_field_by_perturbation(preset, overrides):
    # float64, so that the faint influence at the edge of the receptive field is not lost
    # to rounding
    model = WaveNet.from_preset(preset, **overrides).double().eval()
    randomize_biases(model)
    r = model.receptive_field
    j = 40
    delta = perturbation_delta(model, j + r + 60, j)
    assert torch.all(delta[:j] == 0), "a change at x[j] reached an earlier position"
    assert delta[j] > 0, "x[j] is its own target"
    assert torch.all(delta[j + 1 : j + 9] > 0), "the next positions depend on x[j]"
    assert torch.all(delta[j + r + 1 :] == 0), "a change reached beyond the receptive field"
    # The exact reach: the prediction of x[t] sees x[t - R] ... x[t - 1] and nothing else.
    x = torch.randint(0, model.quantization_channels, (1, r + 50))
    t = r + 20
    assert influencing_samples(model, x, t) == list(range(t - r, t))


def test_receptive_field_formula_and_presets():
    assert receptive_field(2, [1, 2, 4]) == 8
    assert receptive_field(3, [1, 2]) == 7
    expected = {"tiny": (256, 32, 64, 64, 64), "small": (2047, 64, 128, 256, 256),
                "base": (4093, 64, 128, 1024, 512)}
    for name, (r, res, gate, skip, head) in expected.items():
        m = WaveNet.from_preset(name)
        c = m.config
        assert m.receptive_field == r
        assert (c.residual_channels, c.gate_channels, c.skip_channels, c.head_channels) == \
            (res, gate, skip, head)
    assert WaveNet.from_preset("small").receptive_field_ms == pytest.approx(2047 / 16)


def test_forward_and_log_prob_shapes_and_normalisation():
    model = WaveNet.from_preset("tiny")
    x = torch.randint(0, 256, (3, 300))
    logits = model(x)
    assert logits.shape == (3, 256, 300)
    logp = model.log_prob(x)
    assert logp.shape == (3, 300) and torch.all(logp <= 0)
    assert torch.allclose(logits.log_softmax(1).gather(1, x[:, None]).squeeze(1), logp,
                          atol=1e-5)


def test_silence_before_the_start():
    """Position t of a sequence equals position t + P of the same sequence preceded by P
    silence samples: the model assumes silence before x[0]."""
    model = WaveNet.from_preset("tiny").eval()
    randomize_biases(model)
    x = torch.randint(0, 256, (1, 400))
    padded = torch.cat([torch.full((1, 700), model.silence), x], dim=1)
    with torch.no_grad():
        assert torch.allclose(model.log_prob(x), model.log_prob(padded)[:, 700:], atol=1e-5)


def test_bad_inputs_and_presets():
    model = WaveNet.from_preset("tiny")
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 10))
    with pytest.raises(ValueError, match="T=0"):
        model.log_prob(torch.zeros(1, 0, dtype=torch.long))
    # int16 samples or -1 as classes were the embedding's "index out of range in self"
    for low, high in ((-32768, 32767), (0, 256), (-1, 3)):
        x = torch.tensor([[low, 0, high]])
        for fn in (model, model.log_prob):
            with pytest.raises(ValueError, match=rf"classes in \[0, 256\).*{low} .. {high}"
                                                 r".*mulaw.encode"):
                fn(x)
    with pytest.raises(ValueError, match="unknown model preset 'huge'.*tiny"):
        WaveNet.from_preset("huge")
    with pytest.raises(ValueError, match="kernel_size"):
        WaveNet(WaveNetConfig(kernel_size=1))
    with pytest.raises(ValueError, match="unknown model keys"):
        load_preset("tiny", kernel=3)


def test_every_parameter_has_its_own_gradient():
    """In-place gradient updates (accumulation, clipping) must touch one parameter each:
    the skip biases are summed into one bias, and their gradients once shared memory."""
    model = WaveNet.from_preset("tiny", layers_per_stack=3)
    x = torch.randint(0, 256, (2, 300))

    def grads_after(backwards: int, clip: float | None) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        for _ in range(backwards):
            model.log_prob(x).mean().backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    once = grads_after(1, None)
    total = torch.cat([g.flatten() for g in once]).norm()
    for g, twice in zip(once, grads_after(2, None), strict=True):
        torch.testing.assert_close(twice, 2 * g)
    for g, clipped in zip(once, grads_after(1, 1e-3), strict=True):
        torch.testing.assert_close(clipped, g * (1e-3 / (total + 1e-6)))


def test_under_autocast_the_layers_cut_taps_from_h_in_autocasts_dtype():
    """A layer casts h once and cuts its taps from that, not the k-times larger taps in
    float32 (which autocast then casts): bf16 concatenations, the same logits as the
    taps cast after concatenating."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Cats(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.cat.default and args[0][0].dim() == 3:  # not weights
                self.dtypes.append(args[0][0].dtype)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = WaveNet.from_preset("tiny")
    x = torch.randint(0, 256, (2, model.receptive_field + 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with Cats() as cats:
            logits = model.valid_logits(x)
        reference = model.head(_cast_after_cat(model, x))
    assert len(cats.dtypes) >= len(model.layers)
    assert set(cats.dtypes) == {torch.bfloat16}
    torch.testing.assert_close(logits, reference, atol=0, rtol=0)


def _cast_after_cat(model: WaveNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Every layer's gated tail with its taps concatenated in float32 (autocast casts them
    in the product)."""
    num_out = x.shape[1] - model.receptive_field + 1
    h, tails = model.embed(x), []
    for layer in model.layers:
        length = h.shape[1] - layer.context
        taps = torch.cat((h[:, :length], h[:, layer.dilation:]), dim=-1)
        h, tail = layer.from_taps(taps, h[:, layer.context:], num_out, True, None)
        tails.append(tail)
    return tails
