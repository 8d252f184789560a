import json
import logging
import math
import os
import re
import signal
import sys

import numpy as np
import pytest
import torch
from conftest import compose_config, tone, write
from hydra.errors import ConfigCompositionException

from wavegen import load_checkpoint
from wavegen.checkpoint import CheckpointError, read_checkpoint
from wavegen.config import ConfigError
from wavegen.data import CropSampler, DataError
from wavegen.errors import WavegenError
from wavegen.train import Trainer, TrainingError, train

FAST = ["model=tiny", "model.layers_per_stack=5", "data.synthetic_train_seconds=8",
        "data.synthetic_val_seconds=2", "data.segment_length=500", "train.batch_size=4",
        "train.num_examples=0", "train.sample_check_clips=0",
        "train.log_every=1", "optim.warmup_steps=5"]


def fast_config(tmp_path, *overrides):
    return compose_config(*FAST, f"out_dir={tmp_path}", *overrides)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_the_logged_samples_per_second_leave_validations_out(tmp_path, monkeypatch):
    """A metrics line's samples/s (and the bar's) time the training steps of its window:
    a validation inside the window, here one that takes a second, does not lower it."""
    import time

    from wavegen.train import Trainer

    validate = Trainer._validate

    def slow_validation(self):
        time.sleep(1.0)
        return validate(self)

    monkeypatch.setattr(Trainer, "_validate", slow_validation)
    train(fast_config(tmp_path, "train.max_steps=12", "train.log_every=3",
                      "train.val_every=6"))
    rates = [m["samples_per_s"] for m in metrics(tmp_path / "synthetic-tiny")
             if "samples_per_s" in m]
    assert len(rates) == 4  # steps 3, 6, 9 (a validation at step 6 in its window), 12
    assert rates[2] > 0.3 * max(rates[1], rates[3]), rates


@pytest.mark.slow
def test_short_run_lowers_validation_bits(tmp_path):
    cfg = fast_config(tmp_path, "train.max_steps=250", "train.val_every=1000",
                      "optim.lr=5e-3", "train.num_examples=2", "train.example_seconds=0.05")
    untrained = train(fast_config(tmp_path, "train.max_steps=1", "name=untrained"))
    summary = train(cfg)
    assert untrained["val_bits_per_sample"] > 7.5
    assert summary["val_bits_per_sample"] < untrained["val_bits_per_sample"] - 2.0
    run = tmp_path / "synthetic-tiny"
    assert {"last.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in run.iterdir()}
    assert [os.path.basename(p) for p in summary["examples"]] == ["sample_000.wav",
                                                                  "sample_001.wav"]
    model = load_checkpoint(run / "last.pt")
    assert not model.training and model.receptive_field == 32 and model.sample_rate == 16000
    assert read_checkpoint(run / "last.pt")["progress"]["step"] == 250


@pytest.mark.parametrize("model,extra", [([], []), (["model=flow_tiny", "model.layers=2"], []),
                                         ([], ["data.input_noise=1.5", "data.gain_db=6",
                                               "data.polarity=0.5", "train.own_draws=0.5",
                                               "train.own_draws_from=0.5"])],
                         ids=["wavenet", "flow", "input-noise-gain-polarity-own-draws"])
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, monkeypatch, model, extra):
    """Also a flow's, whose loss draws dequantization noise from torch's generator, and a
    run with input noise, gains, flips and the model's own draws (drawn per batch) from its
    fifth step on (the resumed run goes on from the third)."""
    if model:
        monkeypatch.setattr(sys.modules[__name__], "FAST", [*model, *FAST[2:]])
    common = ["train.max_steps=8", "train.checkpoint_every=3", "train.val_every=4",
              "optim.ema_decay=0.9", *extra]
    whole = train(fast_config(tmp_path, *common, "name=whole"))

    original = CropSampler.build
    calls = {"n": 0}

    def crash_on_fifth(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return original(self, *args)

    monkeypatch.setattr(CropSampler, "build", crash_on_fifth)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(fast_config(tmp_path, *common, "name=resumed"))
    monkeypatch.setattr(CropSampler, "build", original)
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["progress"]["step"] == 3
    # the crashed run logged step 4 after its last checkpoint; the resumed run logs it anew
    assert max(m["step"] for m in metrics(tmp_path / "resumed")) == 4
    with pytest.raises(TrainingError, match="train.resume=true"):
        train(fast_config(tmp_path, *common, "name=resumed"))
    resumed = train(fast_config(tmp_path, *common, "name=resumed", "train.resume=true"))

    assert resumed["step"] == whole["step"] == 8
    a, b = read_checkpoint(whole["checkpoint"]), read_checkpoint(resumed["checkpoint"])
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][pid]["exp_avg_sq"])
    assert a["scheduler"] == b["scheduler"]
    losses = {m["step"]: m["loss_bits_per_sample"] for m in metrics(whole["run_dir"])
              if "loss_bits_per_sample" in m}
    resumed_losses = {m["step"]: m["loss_bits_per_sample"] for m in metrics(resumed["run_dir"])
                      if "loss_bits_per_sample" in m}
    assert resumed_losses == losses  # steps 1-3 from the first try, 4-8 after resuming
    assert [m["step"] for m in metrics(resumed["run_dir"])] == \
        [m["step"] for m in metrics(whole["run_dir"])]
    assert resumed["val_bits_per_sample"] == whole["val_bits_per_sample"]


def test_the_ema_forgets_the_initial_weights_from_the_first_step(tmp_path):
    """The EMA's decay is warmed up: after one step it is 0.1 (not optim.ema_decay), so the
    average is 0.1 x initial + 0.9 x trained weights."""
    from wavegen.models.wavenet.model import WaveNet

    cfg = fast_config(tmp_path, "train.max_steps=1", "optim.ema_decay=0.999")
    data = read_checkpoint(train(cfg)["checkpoint"])
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    initial = WaveNet(cfg.model, sample_rate=cfg.data.sample_rate).state_dict()
    for name, trained in data["model"].items():
        expected = 0.1 * initial[name] + 0.9 * trained
        assert torch.allclose(data["ema"][name], expected, atol=1e-6), name


def slow_clock(monkeypatch, step_seconds, timed_validation: float = 30.0) -> dict[str, float]:
    """Training on a clock where step n (from 1) takes step_seconds(n), a validation 30 s
    and the plan's timed one ``timed_validation`` s; returns the clock ({"now": seconds})."""
    import functools

    import wavegen.train as train_module
    from wavegen.budget import Budget

    clock = {"now": 0.0}
    update = train_module.Trainer._update

    def slow_update(self):
        clock["now"] += step_seconds(self.counters.step + 1)
        return update(self)

    def slow(method, seconds):
        def run(self):
            out = method(self)
            clock["now"] += seconds
            return out
        return run

    monkeypatch.setattr(train_module.Trainer, "_update", slow_update)
    for name, seconds in (("_timed_validation", timed_validation), ("_validate", 30.0)):
        monkeypatch.setattr(train_module.Trainer, name,
                            slow(getattr(train_module.Trainer, name), seconds))
    monkeypatch.setattr(train_module, "Budget",
                        functools.partial(Budget, clock=lambda: clock["now"]))
    return clock


def test_a_time_budget_plans_the_steps_that_fit_and_resume_keeps_them(tmp_path, monkeypatch,
                                                                       caplog):
    """train.max_minutes: on a clock where a step takes 2 s and a validation 30 s, 10 min
    leave 600 - 46 (23 steps) - 60 (the validations at steps 10 and 20, not counted as
    step time) - 30 (the timed validation) - 60 (the end) = 404 s for steps of 2 s + 30 s
    / 10 (validation every 10 steps): 80 more, 103 in all; the cosine schedule ends there.
    The speed holds, so the validations' new plans keep it."""
    slow_clock(monkeypatch, lambda step: 2.0)
    budget = ["train.max_minutes=10", "train.val_every=10", "train.checkpoint_every=50"]
    with pytest.raises(ConfigError, match="give one of them"):
        train(fast_config(tmp_path, *budget, "train.max_steps=40"),
              overrides=[*budget, "train.max_steps=40"])
    assert not (tmp_path / "synthetic-tiny").exists()
    with caplog.at_level("INFO", logger="wavegen"):
        summary = train(fast_config(tmp_path, *budget), overrides=budget)
    assert summary["step"] == 103
    assert "train.max_minutes=10: 103 steps (planned at step 23: 2 s a step, a validation " \
        "30 s every 10 steps" in caplog.text
    assert "planned again" not in caplog.text
    saved = read_checkpoint(summary["checkpoint"])
    assert saved["progress"]["planned_steps"] == saved["config"]["train"]["max_steps"] == 103
    assert saved["scheduler"]["_last_lr"][0] == pytest.approx(2e-3 * 0.05)  # the decay's end

    resume = ["train.resume=true"]
    with pytest.raises(ConfigError, match="planned its 103 steps from train.max_minutes=10"):
        train(fast_config(tmp_path, *budget[1:], *resume, "train.max_minutes=5"),
              overrides=[*resume, "train.max_minutes=5"])
    caplog.clear()
    with caplog.at_level("INFO", logger="wavegen"):
        longer = train(fast_config(tmp_path, *budget, *resume, "train.max_steps=120"),
                       overrides=[*resume, "train.max_steps=120"])
    assert longer["step"] == 120 and "time budget" not in caplog.text


def test_a_time_budget_plans_again_when_the_speed_moves(tmp_path, monkeypatch, caplog):
    """A base run planned from steps that a shared machine ran slowly, and then ran faster,
    ended after three quarters of its budget. Steps of 2 s until the plan (103 steps, as
    above) and of 1 s after it: at step 30, 600 - 173 s spent - 60 (the end) = 367 s for
    steps of 1 s + 3 s of validations: 91 more, 121 in all. The cosine decay goes on
    from where it was: the learning rate never rises after the warm-up, and ends at the
    decay's end."""
    from wavegen.train import decay_done, lr_factor

    slow_clock(monkeypatch, lambda step: 2.0 if step <= 23 else 1.0)
    budget = ["train.max_minutes=10", "train.val_every=10", "train.checkpoint_every=50"]
    with caplog.at_level("INFO", logger="wavegen"):
        summary = train(fast_config(tmp_path, *budget), overrides=budget)
    assert summary["step"] == 121
    assert "train.max_minutes=10: 103 steps (planned at step 23" in caplog.text
    assert "train.max_minutes=10: 121 steps instead of 103 (planned again at step 30: 1 s a " \
        "step since step 23, a validation 30 s" in caplog.text
    lrs = [m["lr"] for m in metrics(tmp_path / "synthetic-tiny") if "lr" in m]
    assert len(lrs) == 121
    assert all(b <= a for a, b in zip(lrs[5:], lrs[6:], strict=False))  # after the warm-up
    since = (30, decay_done(30, 5, 103))
    # metrics' lr at step n: the one step n + 1 takes
    assert lrs[29] == pytest.approx(2e-3 * lr_factor(30, 5, 103, 0.05))
    assert lrs[30] == pytest.approx(2e-3 * lr_factor(31, 5, 121, 0.05, since))
    assert lrs[-1] == pytest.approx(2e-3 * 0.05)
    saved = read_checkpoint(summary["checkpoint"])
    assert saved["progress"]["planned_steps"] == 121
    assert saved["progress"]["decay_from_step"] == 30
    assert saved["scheduler"]["_last_lr"][0] == pytest.approx(2e-3 * 0.05)
    # the share done is kept where a new plan starts, and reaches 1 at the new end
    assert lr_factor(30, 5, 121, 0.05, since) == pytest.approx(lr_factor(30, 5, 103, 0.05))
    assert decay_done(121, 5, 121, since) == 1.0


def test_a_time_budget_plans_again_soon_after_own_draws_begin(tmp_path, monkeypatch, caplog):
    """train.own_draws_from: steps of 2 s until the draws begin, then of 4 s (one forward
    more); the plan's timed validation 60 s, the others 30 s. The plans before the draws
    count on 2 s steps to the end; with draws from 0.7 of the run on, the run plans again
    20 steps after they begin, from those steps alone (4 s a step) and the validations'
    measure (30 s), not at the next validation, and ends within its budget."""
    began = {"step": math.inf}  # the trainer's counters.step at the first step with draws

    original = Trainer._own_draws

    def note_start(self, own):
        own = original(self, own)
        if own is not None:
            began["step"] = min(began["step"], self.counters.step)
        return own

    monkeypatch.setattr(Trainer, "_own_draws", note_start)
    clock = slow_clock(monkeypatch, lambda step: 4.0 if step > began["step"] else 2.0,
                       timed_validation=60.0)
    budget = ["train.max_minutes=10", "train.val_every=100", "train.checkpoint_every=1000",
              "train.own_draws=0.5", "train.own_draws_from=0.7"]
    with caplog.at_level("INFO", logger="wavegen"):
        summary = train(fast_config(tmp_path, *budget), overrides=budget)
    first = began["step"]
    total = int(re.search(rf"step {first}: training on own draws from here "
                          rf"\(train.own_draws_from=0.7 of (\d+) steps\)", caplog.text)[1])
    assert first == math.ceil(0.7 * total) and first > 100  # after the first validation
    assert f"steps instead of {total} (planned again at step {first + 20}: 4 s a step since " \
        f"step {first}, a validation 30 s" in caplog.text
    assert summary["step"] < total
    # the budget counts the end (its validation here) as two validations, 60 s
    assert 600 - 60 - 12 < clock["now"] - 30 <= 600 - 60


def test_sigint_saves_a_checkpoint_and_resume_continues(tmp_path, monkeypatch):
    original = CropSampler.build
    calls = {"n": 0}

    def interrupt_on_third(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args)

    monkeypatch.setattr(CropSampler, "build", interrupt_on_third)
    cfg = fast_config(tmp_path, "train.max_steps=6", "train.checkpoint_every=100")
    stopped = train(cfg)
    assert stopped["interrupted"] == "SIGINT" and stopped["step"] == 3
    assert read_checkpoint(stopped["checkpoint"])["progress"]["step"] == 3
    monkeypatch.setattr(CropSampler, "build", original)
    done = train(fast_config(tmp_path, "train.max_steps=6", "train.resume=true"))
    assert done["step"] == 6 and done["interrupted"] is None
    assert set(stopped) == set(done)  # one summary shape, however the run ended
    assert stopped["val_bits_per_sample"] is None and stopped["val_bits_per_sample_by_label"] \
        == {}


def test_nonfinite_losses_are_skipped_then_stop_the_run(tmp_path, monkeypatch):
    from wavegen.models.wavenet.model import WaveNet

    original = WaveNet.valid_logits
    calls = {"n": 0}

    def poisoned(self, inputs, labels=None, *rest, **kw):
        calls["n"] += inputs.device.type != "meta"  # not the step's memory measurement
        out = original(self, inputs, labels, *rest, **kw)
        return out * float("nan") if calls["n"] in (2, 3) else out

    monkeypatch.setattr(WaveNet, "valid_logits", poisoned)
    summary = train(fast_config(tmp_path, "train.max_steps=4", "train.val_every=1000",
                                "train.formulation=linear"))  # no timing passes to count
    assert summary["step"] == 4 and summary["nonfinite_steps"] == 2
    model = load_checkpoint(summary["checkpoint"])
    assert all(torch.isfinite(p).all() for p in model.parameters())

    monkeypatch.setattr(WaveNet, "valid_logits",
                        lambda self, x, c=None, *rest, **kw:
                        original(self, x, c, *rest, **kw) * float("nan"))
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        train(fast_config(tmp_path, "name=nan", "train.max_steps=4", "train.max_nonfinite=3"))


def test_a_step_that_does_not_fit_in_memory_says_what_to_lower_and_keeps_the_steps_made(
        tmp_path, monkeypatch):
    from wavegen.train import Trainer

    original = Trainer._accumulate
    calls = {"n": 0}

    def allocate(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:  # what torch's CPU allocator raises
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. "
                               "DefaultCPUAllocator: can't allocate memory: you tried to "
                               "allocate 54464000000 bytes. Error code 12 (Cannot allocate "
                               "memory)")
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_accumulate", allocate)
    with pytest.raises(TrainingError, match=r"a training step needs more memory than the cpu "
                       r"has \(it asked for 51 GiB more\): lower train.batch_size=4 or "
                       r"data.segment_length=500; .* double train.grad_accum \(now 1\); "
                       r"step 2 is saved in .*last.pt"):
        train(fast_config(tmp_path, "name=oom", "train.max_steps=4", "train.val_every=1000",
                          "train.checkpoint_every=1000", "train.formulation=linear"))
    assert read_checkpoint(tmp_path / "oom" / "last.pt")["progress"]["step"] == 2

    monkeypatch.setattr(Trainer, "_accumulate", lambda *a: np.empty(2**62, np.int8))
    with pytest.raises(TrainingError, match=r"needs more memory than the cpu has \(it asked "
                       r"for 4.00 EiB more\)"):
        train(fast_config(tmp_path, "name=numpy", "train.max_steps=4"))


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException, match="kernel"):
        fast_config(tmp_path, "model.kernel=3")
    with pytest.raises(ConfigCompositionException, match="train.max_steps"):
        fast_config(tmp_path, "train.max_steps=many")
    with pytest.raises(ConfigError, match="model.kernel_size=1.*>= 2"):
        train(fast_config(tmp_path, "model.kernel_size=1"))
    with pytest.raises(ConfigError, match="data.kind='tape'.*synthetic"):
        train(fast_config(tmp_path, "data.kind=tape"))
    with pytest.raises(Exception, match="data.root"):
        train(fast_config(tmp_path, "data=folder"))
    with pytest.raises(ConfigError, match="train.example_top_p=0.0 .*0 < x <= 1"):
        train(fast_config(tmp_path, "train.example_top_p=0"))
    with pytest.raises(ConfigError, match="train.example_temperature=-1.0 .*>= 0"):
        train(fast_config(tmp_path, "train.example_temperature=-1"))


def test_trains_on_a_folder_with_broken_files(tmp_path):
    root = tmp_path / "audio"
    for i in range(3):
        write(root / f"c{i}.flac", tone(0.4, freq=220 * (i + 1), seed=i))
    (root / "broken.wav").write_bytes(b"RIFF1234WAVE")
    summary = train(fast_config(tmp_path, "data=folder", f"data.root={root}",
                                f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=3",
                                "data.segment_length=300"))
    assert summary["step"] == 3
    with pytest.raises(DataError, match="no usable audio"):
        train(fast_config(tmp_path, "data=folder", f"data.root={tmp_path / 'cache'}",
                          "name=x"))


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a wavegen checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_mixed_precision_trains_and_validates_in_fp32(tmp_path, precision):
    summary = train(fast_config(tmp_path, f"train.precision={precision}",
                                "train.max_steps=60", "train.val_every=1000", "optim.lr=5e-3"))
    losses = [m["loss_bits_per_sample"] for m in metrics(summary["run_dir"])
              if "loss_bits_per_sample" in m]
    assert sum(losses[-10:]) / 10 < losses[0] - 1.0, losses
    model = load_checkpoint(summary["checkpoint"])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert summary["val_bits_per_sample"] < 7.0
    ckpt = read_checkpoint(summary["checkpoint"])
    assert (ckpt["scaler"] is not None) == (precision == "fp16")


def test_compiled_forward_gives_the_eager_losses(tmp_path):
    pytest.importorskip("torch._inductor")
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile on CPU needs a C++ compiler; none on the PATH")
    common = ["train.max_steps=3", "train.val_every=1000", "model.layers_per_stack=2"]
    eager = train(fast_config(tmp_path, *common, "name=eager"))
    compiled = train(fast_config(tmp_path, *common, "name=compiled", "train.compile=true"))
    losses = [[m["loss_bits_per_sample"] for m in metrics(s["run_dir"])
               if "loss_bits_per_sample" in m] for s in (eager, compiled)]
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)
    assert compiled["val_bits_per_sample"] == pytest.approx(eager["val_bits_per_sample"],
                                                            abs=1e-3)


def test_dataloader_workers_draw_the_same_batches(tmp_path):
    common = ["train.max_steps=3", "train.val_every=1000"]
    inline = train(fast_config(tmp_path, *common, "name=inline"))
    from wavegen.info import usable_cpus

    workers = train(fast_config(tmp_path, *common, "name=workers",
                                f"train.num_workers={min(2, usable_cpus())}"))
    a, b = read_checkpoint(inline["checkpoint"]), read_checkpoint(workers["checkpoint"])
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_learning_rate_scaling_with_the_effective_batch():
    from wavegen.config import OptimConfig
    from wavegen.train import scaled_lr

    assert scaled_lr(OptimConfig(lr=1e-3), 32, 8) == 1e-3
    assert scaled_lr(OptimConfig(lr=1e-3, lr_scaling="linear"), 32, 8) == pytest.approx(4e-3)
    assert scaled_lr(OptimConfig(lr=1e-3, lr_scaling="sqrt"), 32, 8) == pytest.approx(2e-3)
    assert scaled_lr(OptimConfig(lr=1e-3, lr_scaling="linear", lr_base_batch=16), 32, 8) \
        == pytest.approx(2e-3)


def test_a_warmup_as_long_as_the_run_is_said(tmp_path, caplog):
    """A long run's optim.warmup_steps=1000 on a 200-step run trained the whole run below
    a fifth of optim.lr, never decaying, without a word."""
    from wavegen.train import lr_factor, train

    caplog.set_level(logging.INFO, logger="wavegen")
    train(fast_config(tmp_path, "train.max_steps=4", "optim.warmup_steps=10", "name=long"))
    assert ("optim.warmup_steps=10 is not shorter than the run (4 steps): the learning rate "
            "only rises, to 40% of its peak, and never decays") in caplog.text
    assert lr_factor(3, 10, 4, 0.1) == 0.4
    caplog.clear()
    train(fast_config(tmp_path, "train.max_steps=4", "optim.warmup_steps=3", "name=short"))
    assert "is not shorter than the run" not in caplog.text


@pytest.mark.parametrize("overrides,message", [
    (["data.input_noise=-1"], "data.input_noise=-1.0 is invalid: expected a finite number"),
    (["data.input_noise=nan"], "data.input_noise=nan is invalid"),
    (["data.gain_db=-1"], r"data.gain_db=-1.0 is invalid: expected a number of dB, 0 <= x"),
    (["data.gain_db=nan"], "data.gain_db=nan is invalid"),
    (["data.polarity=1.5"], r"data.polarity=1.5 is invalid: expected 0 <= x <= 1"),
    (["train.own_draws=1.5"], r"train.own_draws=1.5 is invalid: expected 0 <= x <= 1"),
    (["train.own_draws=nan"], "train.own_draws=nan is invalid"),
    (["train.own_draws=0.5", "train.own_draws_from=1"],
     r"train.own_draws_from=1.0 is invalid: expected 0 <= x < 1"),
    (["train.own_draws=0.5", "train.own_draws_from=nan"], "train.own_draws_from=nan is invalid"),
    (["train.own_draws_from=0.5"],
     r"train.own_draws_from=0.5 is invalid: expected 0 unless train.own_draws > 0"),
    # a gain would change a vocoder's audio but not the frames it is conditioned on
    (["condition=mel", "data.gain_db=3"], "data.gain_db=3.0 is invalid: expected 0 with "
                                          "condition=mel"),
    (["train.seed=-1"], r"train.seed=-1 is invalid: expected an integer in \[0, 2\^64\)"),
    (["train.seed=18446744073709551616"], "train.seed=18446744073709551616 is invalid"),
    (["data.synthetic_seed=-5"], "data.synthetic_seed=-5 is invalid"),
    (["data.synthetic_train_seconds=0"], "data.synthetic_train_seconds=0.0 is invalid"),
    (["data.synthetic_val_seconds=nan"], "data.synthetic_val_seconds=nan is invalid"),
    # a negative clip multiplied the gradients by a negative factor: gradient ascent
    (["optim.grad_clip=-1"], r"optim.grad_clip=-1.0 is invalid: expected a finite number >= 0"),
    (["optim.betas=[1.5,0.9]"], r"optim.betas=\[1.5, 0.9\] is invalid: expected two numbers"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1.0 is invalid"),
    (["optim.min_lr_ratio=2"], r"optim.min_lr_ratio=2.0 is invalid: expected 0 <= x <= 1"),
    (["optim.warmup_steps=-1"], "optim.warmup_steps=-1 is invalid"),
    (["data.val_max_total_seconds=0"], r"data.val_max_total_seconds=0(\.0)? is invalid: "
                                       "expected null or a finite number > 0"),
    (["data.val_max_seconds=-1"], "data.val_max_seconds=-1(.0)? is invalid"),
    # torch only warned, then started the processes: on a laptop, swap or the OOM killer
    (["train.num_workers=100000"], "train.num_workers=100000 is invalid: expected 0 to "),
    (["data.decode_workers=0"], "data.decode_workers=0 is invalid: expected null or >= 1"),
    (["data=folder", "data.root={tmp}", "data.labels=true"],
     "data.labels=true is not a setting of it: data.labels takes null, folder or the path"),
])
def test_values_are_checked_before_anything_is_written(tmp_path, overrides, message):
    with pytest.raises(WavegenError, match=message):
        train(compose_config(*(o.format(tmp=tmp_path) for o in overrides),
                             f"out_dir={tmp_path}"))
    assert not list(tmp_path.iterdir())


def test_a_large_held_out_set_is_scored_up_to_a_total_taken_across_labels(tmp_path, caplog):
    """A tenth of a corpus of a day (LJSpeech: 1,310 clips, 2.4 h) was scored in full at
    every validation, most of an hour each on a CPU (the streaming scorer's 45,000 samples/s
    for `small`), every train.val_every=200 steps. Past data.val_max_total_seconds the
    held-out clips are taken in turn across labels; the rest stay held out, unscored."""
    import logging

    from wavegen.data import validation_subset
    from wavegen.train import validation_bits

    root = tmp_path / "audio"
    for label, count in (("a", 8), ("b", 2)):
        for i in range(count):
            write(root / label / f"{i}.wav", tone(0.5, freq=200 + 50 * i,
                                                  seed=i + 100 * (label == "b")))  # not copies
    with caplog.at_level(logging.INFO):
        summary = train(fast_config(tmp_path, "data=folder", f"data.root={root}",
                                    f"data.cache_dir={tmp_path / 'cache'}",
                                    "data.labels=folder", "data.val_fraction=0.5",
                                    "data.val_max_total_seconds=1", "train.max_steps=2"))
    (run,) = [p.parent for p in tmp_path.glob("*/last.pt")]
    held_out = (run / "validation_files.txt").read_text().split()
    assert len(held_out) == 5  # 4 of a, 1 of b: all held out, listed
    assert "validation scores 2 of the 5 held-out clips" in caplog.text
    model = load_checkpoint(run / "last.pt")
    cfg = compose_config("data=folder", f"data.root={root}", "data.val_max_total_seconds=1")
    from wavegen.data import AudioFolder, Preprocessing
    from wavegen.family import Codec

    folder = AudioFolder(root, Preprocessing(16000, Codec(256), 60.0, False, 0.95),
                         tmp_path / "cache", labels="folder")
    clips = [c for c in folder.clips if c.path in held_out]
    scored = validation_subset(clips, cfg.data)
    assert scored == [next(c for c in clips if c.label == label) for label in "ab"]
    assert summary["val_bits_per_sample"] == pytest.approx(
        validation_bits(model, scored, 160000)[0], rel=1e-6)


def test_the_validation_subset_takes_labels_in_turn():
    from wavegen.data import Clip, validation_subset

    cfg = compose_config("data.val_max_total_seconds=2.5", "data.val_max_seconds=1").data
    clips = [Clip(f"{label}{i}", np.zeros(16000 * 2, np.uint8), label)
             for label, n in (("a", 4), ("b", 1), ("c", 2)) for i in range(n)]
    # a0, b0, c0 count 1 s each (their first data.val_max_seconds) and reach 2.5 s
    assert [c.name for c in validation_subset(clips, cfg)] == ["a0", "b0", "c0"]
    cfg.val_max_total_seconds = None
    assert validation_subset(clips, cfg) == clips
    cfg.val_max_total_seconds, cfg.val_max_seconds = 100.0, None
    assert validation_subset(clips, cfg) == clips


def test_memory_that_is_not_there_is_a_line_not_a_traceback(tmp_path, monkeypatch):
    """numpy's MemoryError building 116 TiB of synthetic audio, and torch's allocator error
    while timing the formulations (data.segment_length=1000000000), became one line each."""
    import wavegen.info

    monkeypatch.setattr(wavegen.info, "available_memory", lambda: 2**30)
    with pytest.raises(ConfigError, match=r"data.synthetic_train_seconds=1e\+06 and "
                       r"data.synthetic_val_seconds=\d+: the synthetic audio needs about "
                       r"358 GiB of memory and 1.0 GiB is available"):
        train(fast_config(tmp_path, "data.synthetic_train_seconds=1e6"))
    monkeypatch.undo()

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 32000008160 bytes.")

    monkeypatch.setattr("wavegen.formulation.choose", no_memory)
    with pytest.raises(TrainingError, match="a training step needs more memory than the cpu "
                       r"has \(it asked for 30 GiB more\): lower train.batch_size"):
        train(fast_config(tmp_path, "train.formulation=auto", "name=oom"))


def test_input_noise_does_not_apply_to_a_flow_and_says_so(tmp_path, caplog):
    """A folder's default input noise is not an error for a flow (it predicts no sample
    from past ones): its crops stay exact and the log says why."""
    from wavegen.data import StepBatches

    seen = []
    original = StepBatches.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append(self.input_noise)

    with pytest.MonkeyPatch.context() as patch, caplog.at_level("INFO"):
        patch.setattr(StepBatches, "__init__", spy)
        train(compose_config("model=flow_tiny", "model.layers=2", *FAST[2:],
                             "data.input_noise=1", "train.max_steps=1", f"out_dir={tmp_path}"))
    assert seen == [0.0]
    assert "data.input_noise=1 does not apply to the flow family" in caplog.text


def test_gain_and_polarity_reach_the_training_crops_and_the_log(tmp_path, caplog):
    """data.gain_db / data.polarity: the run's batches carry them and its log says so."""
    from wavegen.data import StepBatches

    seen = []
    original = StepBatches.__getitem__

    def spy(self, k):
        item = original(self, k)
        seen.append((self.augmentation.gain_db, self.augmentation.polarity))
        return item

    with pytest.MonkeyPatch.context() as patch, caplog.at_level("INFO"):
        patch.setattr(StepBatches, "__getitem__", spy)
        train(fast_config(tmp_path, "data.gain_db=4", "data.polarity=0.25", "train.max_steps=1"))
    assert seen == [(4.0, 0.25)]
    assert ("augmentation: each crop's gain uniform in +-4 dB (never past full scale); 25% of "
            "the crops upside down; validation scores the files as they are") in caplog.text
    assert "input noise:" not in caplog.text


def test_input_noise_is_named_in_the_log(tmp_path, caplog):
    """data.input_noise (the music recipe's) shows in the run's log, as gain and polarity do."""
    with caplog.at_level("INFO"):
        train(fast_config(tmp_path, "data.input_noise=1.5", "train.max_steps=1"))
    assert ("input noise: each crop's inputs, the silence before a file included, moved by "
            "rounded N(0, 1.5^2) quantization steps (data.input_noise); targets and validation "
            "exact") in caplog.text
