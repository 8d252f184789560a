"""train.own_draws: training crops whose inputs hold some of the model's own draws
(``Family.draw_targets``, ``data.replace_with_draws``)."""

import numpy as np
import pytest
import torch
from conftest import compose_config, randomize_biases, tone, write
from test_train import fast_config
from test_vocoder import train_vocoder

from wavegen import WaveNet
from wavegen.config import ConfigError
from wavegen.data import StepBatches
from wavegen.family import get_family
from wavegen.models.wavenet.adapter import CrossEntropy, WaveNetFamily
from wavegen.train import train


def draws_of(model, full, u):
    """The family's draws for crops whose targets are ``full`` (B, S) after silence."""
    inputs = model.shift_with_silence(full)  # (B, R + S - 1): a crop's context + S
    return get_family("wavenet").draw_targets(model, inputs, u)


@pytest.mark.parametrize("mixtures", [0, 3], ids=["softmax", "mixture"])
def test_each_draw_inverts_the_cdf_of_its_own_place_and_sees_only_the_values_before_it(
        mixtures):
    """Draw i comes from p(x[i] | x[:i]) (the full forward's column i, silence before),
    inverted at uniform i; changing values from i on leaves draws 0..i as they were."""
    torch.manual_seed(0)
    model = WaveNet.from_preset("tiny", mixtures=mixtures).eval()
    randomize_biases(model, std=0.5)
    full = torch.randint(0, 256, (2, 300))
    u = torch.rand(2, 300, dtype=torch.float64)
    with torch.no_grad():
        d = draws_of(model, full, u)
    assert d.shape == (2, 300) and d.dtype == torch.int64
    with torch.no_grad():
        cdf = model(full).double().softmax(1).cumsum(1)  # (B, Q, T)
    below = cdf.gather(1, (d - 1).clamp(min=0)[:, None]).squeeze(1) * (d > 0)
    at = cdf.gather(1, d[:, None]).squeeze(1)
    assert bool(((below <= u + 1e-6) & (u <= at + 1e-6)).all())
    assert len(set(d.flatten().tolist())) > 20  # not one class: the draws follow u
    later = full.clone()
    later[:, 150:] = torch.randint(0, 256, (2, 150))
    assert torch.equal(draws_of(model, later, u)[:, :151], d[:, :151])


def test_a_family_without_draws_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """A flow predicts no value from past ones, and a family may leave draw_targets out (the
    toy bigram): train.own_draws with either is refused, naming the key, before the run
    folder exists."""
    from wavegen import family

    with pytest.raises(ValueError, match="the flow family does not predict from past values"):
        get_family("flow").draw_targets(None, torch.zeros(1, 4), torch.zeros(1, 4))
    monkeypatch.setattr(family, "FAMILIES", dict(family.FAMILIES))
    family.register_family("bigram", "toy_family:BigramFamily")
    assert get_family("wavenet").draws_targets and not get_family("bigram").draws_targets
    for preset, name in (("flow_tiny", "flow"), ("bigram", "bigram")):
        with pytest.raises(ConfigError, match=rf"train.own_draws=0.5 is invalid: expected 0 "
                                              rf"with the {name} family \(it draws no value"):
            train(compose_config(f"model={preset}", "train.own_draws=0.5",
                                 f"out_dir={tmp_path}"))
    assert not list(tmp_path.iterdir())


def test_the_step_trains_on_the_training_weights_draws_where_the_batch_chose(tmp_path,
                                                                            caplog):
    """The loss sees the crops' inputs with the chosen targets' values replaced by the
    draws of the weights being trained (not the EMA's), made from the exact inputs; the
    targets stay exact; the log names the share."""
    calls = []

    def fake_draws(self, model, inputs, uniforms, labels=None, frames=None, places=None):
        calls.append((model, inputs.clone(), uniforms.clone()))
        return torch.full(uniforms.shape, 3, dtype=torch.long)  # a value the audio avoids

    seen = []
    original_forward = CrossEntropy.forward

    def spy(self, inputs, targets, *rest):
        seen.append((inputs.clone(), targets.clone()))
        return original_forward(self, inputs, targets, *rest)

    batches = []
    original_item = StepBatches.__getitem__

    def keep(self, k):
        item = original_item(self, k)
        batches.append(item)
        return item

    with pytest.MonkeyPatch.context() as patch, caplog.at_level("INFO"):
        patch.setattr(WaveNetFamily, "draw_targets", fake_draws)
        patch.setattr(CrossEntropy, "forward", spy)
        patch.setattr(StepBatches, "__getitem__", keep)
        train(fast_config(tmp_path, "train.own_draws=0.5", "train.max_steps=2",
                          "optim.ema_decay=0.9", "train.val_every=100"))
    assert "own draws: 50% of each crop's inputs after its context replaced" in caplog.text
    assert len(calls) == len(batches) == 2
    # the steps' calls (not the step memory estimate's on meta tensors, nor timing's)
    trained = [s for s in seen if not s[1].is_meta
               and any(torch.equal(s[1], item[1][0]) for item in batches)]
    for (model, exact, u), (inputs, targets), item in zip(calls, trained, batches, strict=True):
        assert all(p.requires_grad for p in model.parameters())  # not the EMA copy
        assert torch.equal(exact, item[0][0]) and torch.equal(u, item[5].uniforms[0])
        context = exact.shape[1] - targets.shape[1]
        changed = inputs != exact
        assert not changed[:, : context + 1].any()
        chosen = item[5].chosen[0][:, :-1]
        assert torch.equal(changed[:, context + 1 :], chosen & (exact[:, context + 1 :] != 3))
        assert bool((inputs[:, context + 1 :][chosen] == 3).all())
        assert 0.3 < chosen.float().mean() < 0.7
    assert np.isfinite(trained[-1][0].float().mean().item())


def test_own_draws_begin_at_the_share_of_the_run_given(tmp_path, caplog):
    """train.own_draws_from=0.5: the first half of the steps train on exact inputs (no draw
    is made), the second on draws; the log says where they begin."""
    steps = []

    def fake_draws(self, model, inputs, uniforms, labels=None, frames=None, places=None):
        steps.append(model.training)
        return torch.full(uniforms.shape, 3, dtype=torch.long)

    with pytest.MonkeyPatch.context() as patch, caplog.at_level("INFO"):
        patch.setattr(WaveNetFamily, "draw_targets", fake_draws)
        train(fast_config(tmp_path, "train.own_draws=0.5", "train.own_draws_from=0.5",
                          "train.max_steps=5", "train.val_every=100"))
    assert len(steps) == 2  # the 4th and 5th of 5 steps: the log counts steps done, 3
    assert "own draws: 50% of each crop's inputs after its context replaced" in caplog.text
    assert "(train.own_draws, from 0.5 of the run's steps on)" in caplog.text
    assert "step 3: training on own draws from here (train.own_draws_from=0.5 of 5 steps)" \
        in caplog.text


def test_a_vocoder_draws_from_the_frames_of_its_crops(tmp_path):
    """A vocoder's draws see its crops' frames and places, as its loss does."""
    root = tmp_path / "audio"
    for i, f in enumerate((220, 330)):
        write(root / f"clip{i}.wav", tone(0.6, freq=f, seed=i))
    seen = []
    original = WaveNetFamily.draw_targets

    def spy(self, model, inputs, uniforms, labels=None, frames=None, places=None):
        out = original(self, model, inputs, uniforms, labels, frames, places)
        seen.append((frames is not None, places is not None, out.shape == uniforms.shape))
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WaveNetFamily, "draw_targets", spy)
        summary = train_vocoder(tmp_path, root, "train.own_draws=0.5", "train.num_examples=0",
                                "train.sample_check_clips=0", steps=2)
    assert seen == [(True, True, True)] * 2 and np.isfinite(summary["val_bits_per_sample"])
