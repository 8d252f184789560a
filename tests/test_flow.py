"""The flow family: invertibility, log-determinants against the full Jacobian, the change of
variables and the dequantization bound on a toy, windowed scoring and sampling equal to the
whole-clip computation, and training / scoring / generation through the public entry
points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compose_config, run_wavegen, tone, write

from wavegen import WaveNet, generate, load_checkpoint, score_file
from wavegen.errors import WavegenError
from wavegen.models.flow import adapter
from wavegen.models.flow.config import FlowConfig
from wavegen.models.flow.model import Flow
from wavegen.scoring import StreamScorer, score_files
from wavegen.train import train


def flow(dtype=torch.float32, seed: int = 0, **shape) -> Flow:
    """A flow that is not the identity: its zero-initialised last layers made random."""
    values = {"squeeze": 4, "steps": 3, "layers": 3, "channels": 8, **shape}
    model = Flow(FlowConfig(**values)).to(dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for step in model.steps:
            for p in (step.net.end.weight, step.net.end.bias):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.3)
    return model


@pytest.mark.parametrize("coupling", ["additive", "affine"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_inverse_undoes_forward(coupling, dtype, tol):
    model = flow(dtype, coupling=coupling)
    x = torch.rand(2, 4, 300, dtype=dtype) * 2 - 1
    audio = torch.from_numpy(tone(0.1)).to(dtype)[:1600].view(1, -1, 4).transpose(1, 2)
    with torch.no_grad():
        for inputs in (x, audio):
            for step in model.steps:  # each coupling on its own
                assert torch.allclose(step.inverse(step(inputs, None)[0], None), inputs,
                                      atol=tol, rtol=0)
            z, _ = model(inputs)
            assert torch.allclose(model.inverse(z), inputs, atol=tol, rtol=0)
            assert not torch.allclose(z, inputs, atol=1e-3)  # the flow does something


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_log_det_equals_the_full_jacobians(coupling):
    model = flow(torch.float64, coupling=coupling, steps=2, layers=2)
    x = torch.rand(1, 4, 5, dtype=torch.float64) * 2 - 1

    def f(flat):
        return model(flat.view(1, 4, 5))[0].reshape(-1)

    jacobian = torch.autograd.functional.jacobian(f, x.reshape(-1))
    _, logdet = model(x)
    expected = torch.linalg.slogdet(jacobian)[1]
    assert logdet.sum().item() == pytest.approx(expected.item(), abs=1e-9)
    if coupling == "additive":
        assert torch.equal(logdet, torch.zeros_like(logdet))  # exactly 0, not nearly
    else:
        assert abs(expected.item()) > 0.1


def grid_density(model: Flow, lo: float, hi: float, n: int):
    """p(y) of a G = 2, one-frame flow on an n x n grid of cell centres over [lo, hi)^2."""
    step = (hi - lo) / n
    axis = lo + (torch.arange(n, dtype=torch.float64) + 0.5) * step
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack((a.reshape(-1), b.reshape(-1)), dim=1).unsqueeze(-1)  # (n^2, 2, 1)
    with torch.no_grad():
        density = model.frame_log_likelihood(points).exp().view(n, n)
    return density, step


def test_density_integrates_to_one_and_the_bound_holds_on_a_toy():
    model = flow(torch.float64, squeeze=2, steps=4, layers=1, channels=4,
                 quantization_channels=4)
    density, cell = grid_density(model, -8.0, 8.0, 1600)
    assert density.sum().item() * cell**2 == pytest.approx(1.0, abs=1e-3)

    # exact class probabilities: the density integrated over each bin of [-1, 1)^2
    per_bin = 200
    density, cell = grid_density(model, -1.0, 1.0, 4 * per_bin)
    mass = density.view(4, per_bin, 4, per_bin).sum((1, 3)) * cell**2  # (k1, k2)
    delta = model.delta
    for k1 in range(4):
        for k2 in range(4):
            u = torch.rand(20000, 2, dtype=torch.float64, generator=torch.Generator()
                           .manual_seed(k1 * 4 + k2))
            y = model.dequantize(torch.tensor([k1, k2]).expand(20000, 2), u).unsqueeze(-1)
            with torch.no_grad():
                bound = -(model.frame_log_likelihood(y).mean().item() + 2 * math.log(delta))
            exact = -math.log(mass[k1, k2].item())
            assert bound >= exact - 1e-3, (k1, k2, bound, exact)


def whole_clip_bits(model: Flow, classes: np.ndarray, seed=adapter.NOISE_SEED) -> np.ndarray:
    """Per-sample figures (nats) of the whole clip in one pass, with the scorer's noise."""
    g = model.squeeze
    usable = len(classes) // g * g
    u = np.random.default_rng(seed).random(len(classes))[:usable]
    y = model.dequantize(torch.from_numpy(classes[:usable]).view(1, -1),
                         torch.from_numpy(u).view(1, -1)).float()
    with torch.no_grad():
        ll = model.frame_log_likelihood(model.to_frames(y))
    return (ll.double() / g + math.log(model.delta)).repeat_interleave(g, 1)[0].numpy()


@pytest.mark.parametrize("piece", [1, 7, 333, 5000])
def test_windowed_scoring_equals_the_whole_clip(monkeypatch, piece):
    monkeypatch.setattr(adapter, "WINDOW", 16)  # many windows, each overlapping by reach
    model = flow(layers=3)  # reach 3 steps x 7 frames
    assert model.reach == 21
    classes = np.random.default_rng(0).integers(0, 256, 4003)
    scorer = StreamScorer(model, tile=piece, per_sample=True)
    scorer.add(classes)
    record = scorer.result()
    expected = whole_clip_bits(model, classes)
    assert record["num_samples"] == 4000 and record["bound"] is True  # the last 3: no frame
    assert np.allclose(-record["surprisal"] * math.log(2), expected, atol=2e-5)
    assert record["log_prob_nats"] == pytest.approx(expected.sum(), rel=1e-6)


def test_files_score_the_same_one_by_one_and_in_a_batch(monkeypatch, tmp_path):
    monkeypatch.setattr(adapter, "WINDOW", 16)  # windows end inside the pieces of a tile
    model = flow(layers=3)
    clips = [write(tmp_path / f"{i}.wav", tone(s, freq=f)) for i, (s, f) in
             enumerate([(0.3, 300.0), (0.05, 500.0), (0.4, 700.0)])]
    alone = [score_file(model, c, tile=40) for c in clips]
    together = list(score_files(model, clips, batch=4, tile=40))  # answers come in bursts
    assert [r["num_samples"] for r in together] == [4800, 800, 6400]
    for a, b in zip(alone, together, strict=True):
        assert b["num_samples"] == a["num_samples"]
        assert b["log_prob_nats"] == pytest.approx(a["log_prob_nats"], rel=1e-6)


def test_importance_samples_give_the_importance_weighted_bound(monkeypatch):
    monkeypatch.setattr(adapter, "WINDOW", 16)
    model = flow(layers=3)
    classes = np.random.default_rng(0).integers(100, 140, 2000)
    totals = [whole_clip_bits(model, classes, [adapter.NOISE_SEED, j]).sum()
              for j in range(4)]
    scorer = StreamScorer(model, tile=300, importance_samples=4)
    scorer.add(classes)
    record = scorer.result()
    tight = torch.logsumexp(torch.tensor(totals, dtype=torch.float64), 0).item() - math.log(4)
    assert record["log_prob_nats"] == pytest.approx(tight, rel=1e-6)
    assert tight >= np.mean(totals)  # never looser than the draws' mean
    with pytest.raises(ValueError, match="figures are exact"):
        StreamScorer(WaveNet.from_preset("tiny"), importance_samples=2)


def test_many_importance_samples_are_scored_in_groups_in_bounded_memory(monkeypatch):
    """The layers see at most GROUP streams at once, with the figures of all at once; draws
    whose buffers cannot fit are refused before scoring (100,000 of them were killed by the
    out-of-memory killer after 90 s)."""
    import wavegen.info

    monkeypatch.setattr(adapter, "WINDOW", 16)
    model = flow(layers=3)
    classes = np.random.default_rng(0).integers(100, 140, 1000)
    seen = []
    original = Flow.frame_log_likelihood

    def spy(self, x, entries=None):
        seen.append(x.shape[0])
        return original(self, x, entries)

    def scored(group):
        monkeypatch.setattr(adapter, "GROUP", group)
        seen.clear()
        scorer = StreamScorer(model, tile=300, importance_samples=7, per_sample=True)
        scorer.add(classes)
        return scorer.result(), max(seen)

    monkeypatch.setattr(Flow, "frame_log_likelihood", spy)
    (grouped, most), (at_once, all_streams) = scored(3), scored(16)
    assert most == 3 and all_streams == 7
    assert grouped["log_prob_nats"] == pytest.approx(at_once["log_prob_nats"], rel=1e-9)
    np.testing.assert_allclose(grouped["surprisal"], at_once["surprisal"], rtol=1e-6)

    monkeypatch.setattr(wavegen.info, "available_memory", lambda: 2**10)
    with pytest.raises(WavegenError, match="7 importance samples .* need about [0-9]+ KiB of "
                       "memory and 1 KiB is available: use fewer"):
        StreamScorer(model, importance_samples=7)


def test_windowed_sampling_equals_the_whole_clip(monkeypatch):
    model = flow(layers=3)
    noise = np.random.default_rng(1).standard_normal((2, 1001))
    whole = adapter.sample(model, adapter.Condition(), noise, 0.8)
    monkeypatch.setattr(adapter, "WINDOW", 16)
    assert np.array_equal(adapter.sample(model, adapter.Condition(), noise, 0.8), whole)
    # and a clip is the inverse of its noise, scaled by the temperature, in frames of G
    g, noise = model.squeeze, noise[:, :1000]
    z = torch.from_numpy(noise).float().view(2, -1, g).transpose(1, 2) * 0.8
    with torch.no_grad():
        y = model.inverse(z)
    assert np.array_equal(model.classes(y).numpy(),
                          adapter.sample(model, adapter.Condition(), noise, 0.8))


FAST = ["data.synthetic_train_seconds=8", "data.synthetic_val_seconds=2",
        "data.segment_length=1600", "train.batch_size=4", "train.val_every=50",
        "train.num_examples=1", "train.example_seconds=0.1", "train.sample_check_seconds=0.2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow")
    summary = train(compose_config("model=flow_tiny", *FAST, "train.max_steps=100",
                                   f"out_dir={out}"))
    return out, summary


def test_training_lowers_the_bound_and_scores_and_samples_through_the_api(trained):
    out, summary = trained
    assert summary["val_bits_per_sample"] < 7.0  # from 8 (uniform) at the start
    model = load_checkpoint(summary["checkpoint"])
    assert type(model) is Flow and model.config.preset == "flow_tiny"
    clip = write(out / "clip.wav", tone(1.0))
    record = score_file(model, clip)
    assert record["bound"] is True and record["num_samples"] == 16000
    again = list(score_files(model, [clip, clip], batch=4))
    assert [r["log_prob_nats"] for r in again] == [record["log_prob_nats"]] * 2

    audio = generate(model, n=2, num_samples=1000, seed=3)
    assert audio.shape == (2, 1000) and torch.equal(audio, generate(model, n=2,
                                                                    num_samples=1000, seed=3))
    assert not torch.equal(audio[0], audio[1])
    with pytest.raises(ValueError, match="cannot continue a prime"):
        generate(model, n=1, num_samples=100, prime=tone(0.1))
    with pytest.raises(ValueError, match="top_p applies to a categorical draw"):
        generate(model, n=1, num_samples=100, top_p=0.9)


def test_the_command_line_marks_a_flow_s_figures_as_bounds(trained, tmp_path):
    out, summary = trained
    clip = write(tmp_path / "clip.wav", tone(0.5))

    def wavegen(*args):
        return run_wavegen(*args, cwd=tmp_path)

    done = wavegen("score", summary["checkpoint"], clip, "--csv", tmp_path / "s.csv",
                   "--importance-samples", "3")
    assert done.returncode == 0, done.stderr
    assert "bits are upper bounds" in done.stdout
    header, row = (tmp_path / "s.csv").read_text().splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True))["bound"] == "True"
    refused = wavegen("generate", summary["checkpoint"], "--prime", clip)
    assert refused.returncode == 2 and "cannot continue a prime" in refused.stderr


def test_a_conditional_flow_scores_under_each_label_and_classifies(tmp_path, monkeypatch):
    """Labels reach every coupling network; classification runs every label as a row of
    one scorer, on the same dequantized values, and each row equals the file scored under
    that label alone."""
    from wavegen.classify import classify_file

    monkeypatch.setattr(adapter, "WINDOW", 16)
    model = flow(layers=2, labels=["low", "high"])
    with torch.no_grad():
        model.label_embed.weight.copy_(torch.randn(model.label_embed.weight.shape))
    clip = write(tmp_path / "clip.wav", tone(0.3))
    result = classify_file(model, clip, tile=500)
    for name in ("low", "high"):
        alone = score_file(model, clip, label=name)["log_prob_nats"]
        assert result["labels"][name]["log_prob_nats"] == pytest.approx(alone, rel=1e-6)
    assert result["labels"]["low"]["log_prob_nats"] != result["labels"]["high"]["log_prob_nats"]
