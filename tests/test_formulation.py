"""The training step's formulations compute one function; train.formulation=auto measures
which is fastest once per machine and shape, caches it, and a resumed run keeps its own."""

import json
import logging

import pytest
import torch
from conftest import compose_config, randomize_biases
from test_train import FAST, fast_config

from wavegen import WaveNet, formulation
from wavegen.checkpoint import read_checkpoint
from wavegen.config import ConfigError
from wavegen.family import get_family
from wavegen.info import native_bf16, report
from wavegen.models.wavenet.adapter import CrossEntropy
from wavegen.train import train


@pytest.mark.parametrize("overrides,labels", [({}, None), ({"kernel_size": 3}, None),
                                              ({"labels": ["a", "b"]}, [2, 0, 1])])
def test_conv_formulation_equals_linear_in_logits_and_gradients(overrides, labels):
    model = WaveNet.from_preset("tiny", **overrides)
    randomize_biases(model)
    x = torch.randint(0, 256, (3, model.receptive_field + 200))
    entries = None if labels is None else torch.tensor(labels)
    results = {}
    for name in WaveNet.FORMULATIONS:
        model.formulation = name
        model.zero_grad()
        logits = model.valid_logits(x, entries)
        logits.square().mean().backward()
        results[name] = logits.detach(), {n: p.grad.clone() for n, p in
                                          model.named_parameters() if p.grad is not None}
    (linear, grads), (conv, conv_grads) = results["linear"], results["conv"]
    assert torch.allclose(linear, conv, atol=1e-5)
    assert grads.keys() == conv_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, conv_grads[name], atol=1e-6, rtol=1e-4), name


def test_measuring_leaves_no_gradient_and_no_draw_behind():
    family = get_family("wavenet")
    model = WaveNet.from_preset("tiny")
    rng = torch.get_rng_state()
    rates = formulation.measure(family, model, CrossEntropy(model), 2,
                                model.receptive_field - 1, 100, 256, torch.autocast(
                                    "cpu", enabled=False))
    assert set(rates) == {"linear", "conv"} and all(r > 0 for r in rates.values())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert model.formulation == "linear"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_reduced_precision_on_a_cpu_without_it_says_what_it_costs(tmp_path, monkeypatch,
                                                                    caplog, precision):
    """The bf16 recipe of a Zen 4 copied to a CPU without native bf16 trained at a tenth of
    fp32's speed (tiny, 2-core AVX2 Zen 4) without a word; fp16 (a GPU recipe) at a
    eleventh. The step is timed in fp32 too, and a warning gives the ratio when fp32 is
    faster."""
    import wavegen.train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(wavegen.train, "native_bf16", lambda: (False, "no avx512_bf16"))
    caplog.set_level(logging.INFO, logger="wavegen")
    train(fast_config(tmp_path, "train.max_steps=1", f"train.precision={precision}"))
    table = json.loads((tmp_path / "cache" / "wavegen" / "formulations.json").read_text())
    rates = {json.loads(key)["precision"]: max(entry["rates"].values())
             for key, entry in table.items()}
    assert set(rates) == {precision, "fp32"}
    said = f"train.precision={precision} runs this step at" in caplog.text
    assert said == (rates["fp32"] > rates[precision])
    if said:
        assert f"{rates[precision] / rates['fp32']:.2f}x the speed of fp32" in caplog.text


def test_auto_precision_is_bf16_where_the_cpu_computes_it_and_a_resumed_run_keeps_its_own(
        tmp_path, monkeypatch, caplog):
    """The one-hour recipe's train.precision=auto: bf16 on a CPU with native bf16, fp32
    without it, said at start-up and kept in the run's config; a resumed run keeps what it
    started with on a machine that would pick the other."""
    import wavegen.train

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO, logger="wavegen")
    for native, name, picked, why in [
            (True, "native", "bf16", "this CPU computes bf16 natively (amx_bf16)"),
            (False, "plain", "fp32", "no avx512_bf16 or amx_bf16")]:
        monkeypatch.setattr(wavegen.train, "native_bf16", lambda native=native: (
            native, "amx_bf16" if native else "no avx512_bf16 or amx_bf16"))
        caplog.clear()
        train(fast_config(tmp_path, "train.max_steps=1", "train.precision=auto", f"name={name}",
                          "train.formulation=linear"))
        assert f"precision: {picked} (train.precision=auto: {why});" in caplog.text
        saved = read_checkpoint(tmp_path / name / "last.pt")["config"]["train"]
        assert saved["precision"] == picked
    caplog.clear()  # on the CPU without bf16 now, the bf16 run resumed goes on in bf16
    train(fast_config(tmp_path, "train.max_steps=2", "train.precision=auto", "name=native",
                      "train.resume=true", "train.formulation=linear"))
    assert "precision: bf16 (train.precision=auto: the resumed run's)" in caplog.text


def test_auto_measures_once_caches_and_a_resumed_run_keeps_its_own(tmp_path, monkeypatch,
                                                                    caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    caplog.set_level(logging.INFO, logger="wavegen")
    train(fast_config(tmp_path, "train.max_steps=2", "name=first"))
    assert "timing the training step's formulations" in caplog.text  # before the pause
    assert "training step formulation" in caplog.text and "measured now" in caplog.text
    table = json.loads((tmp_path / "cache" / "wavegen" / "formulations.json").read_text())
    entries = {json.loads(key)["precision"]: entry for key, entry in table.items()}
    entry = entries["fp32"]
    assert set(entry["rates"]) == {"linear", "conv"}
    if native_bf16()[0]:  # an fp32 run says what bf16 would gain, and `wavegen info` too
        assert set(entries) == {"fp32", "bf16"}
        assert "computes bf16 natively" in caplog.text and "as fast here" in caplog.text
        assert "ran a training step" in report()
    else:
        assert set(entries) == {"fp32"}
    first = read_checkpoint(tmp_path / "first" / "last.pt")["formulation"]
    assert first == entry["best"]

    caplog.clear()
    train(fast_config(tmp_path, "train.max_steps=2", "name=second"))
    assert "measured earlier" in caplog.text and "measured now" not in caplog.text
    assert "timing the training step's formulations" not in caplog.text

    other = "conv" if first == "linear" else "linear"  # a run that chose the other one
    train(fast_config(tmp_path, "train.max_steps=2", "name=third",
                      f"train.formulation={other}"))
    assert read_checkpoint(tmp_path / "third" / "last.pt")["formulation"] == other
    caplog.clear()
    train(fast_config(tmp_path, "train.max_steps=4", "name=second", "train.resume=true"))
    assert f"formulation: {first} (the resumed run's)" in caplog.text
    caplog.clear()  # a formulation given on the command line wins (the same function)
    train(fast_config(tmp_path, "train.max_steps=6", "name=second", "train.resume=true",
                      f"train.formulation={other}"))
    assert f"formulation: {other} (as train.formulation says)" in caplog.text
    assert read_checkpoint(tmp_path / "second" / "last.pt")["formulation"] == other


def test_formulation_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="train.formulation"):
        train(fast_config(tmp_path, "train.formulation=fft"))
    with pytest.raises(ConfigError, match="train.formulation.*one formulation"):
        train(compose_config("model=flow_tiny", *FAST[2:], f"out_dir={tmp_path}",
                             "train.formulation=conv"))
    assert not list(tmp_path.iterdir())  # refused before any run folder


def test_a_corrupt_cache_is_measured_again_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = formulation.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    family, model = get_family("wavenet"), WaveNet.from_preset("tiny")
    args = (family, model, CrossEntropy(model), 2, model.receptive_field - 1, 100, 256, "fp32",
            torch.autocast("cpu", enabled=False))
    best, rates, cached = formulation.choose(*args)
    assert cached is None and model.formulation == best == max(rates, key=rates.get)
    assert formulation.choose(*args) == (best, rates, path)  # read back, not measured


def test_info_gives_the_bf16_gain_of_the_heaviest_step_measured(tmp_path, monkeypatch):
    """`wavegen info` said "bf16 ran a training step 0.9x as fast as fp32" from a test's
    tiny model measured after a real run's small one (2x): the heaviest step measured in
    both precisions speaks for training here, whichever came last."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    family = get_family("wavenet")
    table = {}
    for preset, rates in [("small", {"fp32": 15000.0, "bf16": 31000.0}),
                          ("tiny", {"fp32": 160000.0, "bf16": 144000.0})]:
        model = WaveNet.from_preset(preset)
        for precision, rate in rates.items():
            table[formulation.cache_key(family, model, 4, 6046, precision)] = {
                "rates": {"linear": rate, "conv": rate / 2}, "best": "linear"}
    formulation.cache_path().parent.mkdir(parents=True)
    formulation.cache_path().write_text(json.dumps(table))
    gain, what = formulation.bf16_gain()
    assert gain == pytest.approx(31000 / 15000) and what.startswith("wavenet small")
