"""Precision chosen by the hardware, and fp16 loss scaling: a skipped step is counted, not fatal."""

import json
import platform

import numpy as np
import pytest
import torch

from alignlib import checkpoint, config, machine, precision, records, reinforce_loop, reward_model_loop
from test_reinforce import PROMPTS, toy_reward
from test_reward import toy_pairs

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def no_amp_override(monkeypatch):
    monkeypatch.delenv(precision.AMP_ENV, raising=False)


def test_explicit_settings_are_used_as_asked_and_unknown_ones_refused():
    for amp in ("none", "fp16", "bf16"):
        assert config.resolve_amp(amp, CPU) == amp
    with pytest.raises(ValueError, match="unknown precision 'fp8'.*auto, none, fp16, bf16"):
        config.resolve_amp("fp8", CPU)


def test_auto_on_cpu_takes_bf16_only_where_it_measures_faster(monkeypatch):
    monkeypatch.setattr(precision, "cpu_matmul_gflops", lambda: {"fp32": 110.0, "bf16": 0.9})
    slow = precision.resolve("auto", CPU)
    assert slow.amp == "none" and "bf16 0.9 vs fp32 110.0 GFLOP/s" in slow.reason
    monkeypatch.setattr(precision, "cpu_matmul_gflops", lambda: {"fp32": 110.0, "bf16": 900.0})
    assert precision.resolve("auto", CPU).amp == "bf16"
    monkeypatch.setattr(precision, "cpu_matmul_gflops", lambda: {"fp32": 110.0, "bf16": 120.0})
    assert precision.resolve("auto", CPU).amp == "none"  # too small a gain to pay for the casts


@pytest.mark.skipif(platform.machine() != "x86_64" or bool(machine.cpu_bf16_flags()),
                    reason="only an x86 CPU without native bf16 (AVX2 only) must fall back to float32")
def test_auto_picks_float32_on_a_cpu_without_native_bf16():
    rates = precision.cpu_matmul_gflops()
    assert rates["bf16"] < rates["fp32"]  # emulated bf16 is slower than float32 here
    assert config.resolve_amp("auto", CPU) == "none"


def pretend_gpu(monkeypatch, name, capability):
    """torch.cuda answering as the GPU `name` of compute capability `capability` does (torch 2.x): plain
    `is_bf16_supported()` says True on every CUDA GPU that can emulate bf16, a T4 included; only
    `including_emulation=False` and the capability tell native support."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability[0] >= 8)
    monkeypatch.setattr(torch.version, "hip", None)


def test_auto_on_a_t4_takes_fp16_with_loss_scaling_not_emulated_bf16(monkeypatch):
    pretend_gpu(monkeypatch, "Tesla T4", (7, 5))
    assert torch.cuda.is_bf16_supported()  # the T4's answer that misled the old check
    p = precision.resolve("auto", "cuda")
    assert p.amp == "fp16" and "compute capability 7.5" in p.reason and "no native bf16" in p.reason
    with pytest.raises(ValueError, match=r"Tesla T4 \(compute capability 7.5\) has no native bfloat16.*fp16"):
        precision.resolve_amp("bf16", "cuda")


@pytest.mark.parametrize("name, capability", [("NVIDIA A100-SXM4-40GB", (8, 0)), ("NVIDIA L4", (8, 9)),
                                              ("NVIDIA H100 80GB HBM3", (9, 0))])
def test_auto_on_an_ampere_or_newer_gpu_takes_bf16(monkeypatch, name, capability):
    pretend_gpu(monkeypatch, name, capability)
    assert precision.resolve_amp("auto", "cuda") == "bf16"
    assert precision.resolve_amp("bf16", "cuda") == "bf16"


def test_measuring_the_hardware_leaves_the_global_random_state_alone():
    """The `auto` probe runs inside the first run of a process: drawing its matrices from the global
    generator would give that run other dropout masks than the same run alone (or resumed) elsewhere."""

    precision.cpu_matmul_gflops.cache_clear()
    torch.manual_seed(0)
    precision.cpu_matmul_gflops()
    machine.matmul_gflops(n=64, repeats=1)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_environment_overrides_the_config(monkeypatch):
    monkeypatch.setenv(precision.AMP_ENV, "fp16")
    p = precision.resolve("none", CPU)
    assert p.amp == "fp16" and "$ALIGNLIB_AMP" in p.reason
    monkeypatch.setenv(precision.AMP_ENV, "half")
    with pytest.raises(ValueError, match="unknown precision 'half' \\(\\$ALIGNLIB_AMP\\)"):
        precision.resolve("none", CPU)


def test_autocast_runs_every_precision_on_cpu():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for amp, dtype in (("none", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
        with precision.autocast(amp, CPU):
            assert layer(x).dtype == dtype
    assert not torch.is_autocast_enabled("cpu")


def test_record_states_the_precision_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "results_dir", lambda profile: tmp_path)
    path = records.write_record("run", "smoke", model_source="tiny", data_source="test", seed=0, wall_time_s=1.0,
                                config={}, metrics={"grad_norms": [1.0, None]}, amp="fp16")
    record = json.loads(path.read_text())
    assert (record["device"], record["precision"], record["precision_requested"]) == ("cpu", "fp16", "fp16")
    assert "set by the config" in record["precision_reason"]


def test_raise_if_stuck_counts_only_skips_in_a_row():
    n = precision.MAX_SKIPS_IN_A_ROW
    precision.raise_if_stuck([None] * (n - 1), "here")
    precision.raise_if_stuck([None] * n + [0.5], "here")  # a good step ends the streak
    with pytest.raises(FloatingPointError, match=f"skipped {n} steps in a row here"):
        precision.raise_if_stuck([0.5] + [None] * n, "here")
    assert precision.skipped_steps([None, 1.0, None]) == 2


class InfOnce:
    """A gradient hook that turns the gradient into inf on the backward passes listed in `at`."""

    def __init__(self, at):
        self.at, self.calls = set(at), 0

    def __call__(self, grad):
        self.calls += 1
        return grad * float("inf") if self.calls in self.at else grad


def trainable(model):
    return next(p for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)


def test_fp16_rm_training_skips_overflowing_steps_and_goes_on(tiny_rm, tokenizer, tmp_path, monkeypatch):
    """The full profile's Level 2 setting (fp16 autocast with loss scaling) on CPU. The scaler starts
    at 2**16, so the first steps overflow and are skipped until the scale is small enough (as on a
    GPU); an inf gradient injected later is skipped too. A skipped step leaves the weights alone and
    halves the scale; training goes on and the record is written."""
    cfg = config.with_overrides(config.get_profile("full").rm_prob, batch_size=4, max_steps=None, epochs=4, lr=5e-3)
    model = tiny_rm(num_labels=10)
    injected = 9  # the 10th backward pass = step 9 (no accumulation)
    trainable(model).register_hook(InfOnce(at={injected + 1}))
    weights = lambda: {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    snapshots, scales = [weights()], []
    original_step = precision.clip_and_step

    def spy(optimizer, scaler, params, max_grad_norm, where, **kwargs):
        norm = original_step(optimizer, scaler, params, max_grad_norm, where, **kwargs)
        snapshots.append(weights())
        scales.append(scaler.get_scale())
        return norm

    monkeypatch.setattr(precision, "clip_and_step", spy)
    hist = reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), cfg, 128, progress=False,
                                     checkpoint_dir=tmp_path / "ckpt", checkpoint_every=6)
    norms = hist["optim/grad_norm"]
    assert len(norms) == 12 and norms[0] is None  # 2**16 is too large a scale for this model at first
    natural = next(i for i, g in enumerate(norms) if g is not None)
    assert natural < injected and all(g is not None for g in norms[natural:injected])
    assert norms[injected] is None and all(g is not None and np.isfinite(g) for g in norms[injected + 1:])
    assert precision.skipped_steps(norms) == natural + 1
    for step in (*range(natural), injected):  # skipped: weights untouched, scale halved
        assert all(torch.equal(snapshots[step][n], snapshots[step + 1][n]) for n in snapshots[0])
        assert scales[step] == (scales[step - 1] if step else 2.0**16) / 2
    assert any(not torch.equal(snapshots[0][n], snapshots[-1][n]) for n in snapshots[0])  # it trained
    assert np.mean(hist["train/loss"][-3:]) < np.mean(hist["train/loss"][natural:natural + 3])
    state = torch.load(checkpoint.latest(tmp_path / "ckpt") / "state.pt", weights_only=False)
    assert state["extra"]["scaler"]["scale"] == scales[-1]
    monkeypatch.setattr(records, "results_dir", lambda profile: tmp_path)
    records.write_record("rm_prob", "smoke", model_source="tiny", data_source="test", seed=0, wall_time_s=1.0,
                         config={}, metrics={"skipped_steps": precision.skipped_steps(norms)}, amp=cfg.amp, curve=hist)
    assert json.loads((tmp_path / "rm_prob.json").read_text())["curve"]["optim/grad_norm"][injected] is None


def test_fp16_overflow_at_every_step_stops_with_a_clear_error(tiny_rm, tokenizer):
    cfg = config.with_overrides(config.get_profile("full").rm_prob, batch_size=4, max_steps=None, epochs=10)
    model = tiny_rm(num_labels=10)
    trainable(model).register_hook(InfOnce(at=range(1, 1000)))
    with pytest.raises(FloatingPointError, match="skipped 20 steps in a row at step 19"):
        reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), cfg, 128, progress=False)


def test_float32_overflow_is_fatal(tiny_rm, tokenizer):
    """Without loss scaling nothing can absorb an inf gradient: stop, naming the step."""
    cfg = config.with_overrides(config.get_profile("full").rm_scalar, batch_size=4, max_steps=3)
    model = tiny_rm()
    trainable(model).register_hook(InfOnce(at={2}))
    with pytest.raises(FloatingPointError, match="non-finite gradient norm at step 1"):
        reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), cfg, 128, progress=False)


def test_fp16_reinforce_skips_an_overflowing_step_and_goes_on(tokenizer):
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_config(tokenizer))
    policy.model.norm.weight.register_hook(InfOnce(at={2}))
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, iterations=4, prompts_per_iter=2,
                                max_new_tokens=4, lr=1e-3, amp="fp16")
    hist = reinforce_loop.train_reinforce(policy, tokenizer, toy_reward, PROMPTS, cfg, progress=False)
    assert hist["step"] == [1, 2, 3, 4]
    assert hist["optim/grad_norm"][1] is None and all(g is not None for g in hist["optim/grad_norm"][2:])
    assert reinforce_loop.summarize_history(hist)["skipped_steps"] == 1 + (hist["optim/grad_norm"][0] is None)


def reinforce_with_inf_gradients(tokenizer, at, **changes):
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_config(tokenizer))
    policy.model.norm.weight.register_hook(InfOnce(at=at))
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, prompts_per_iter=2, max_new_tokens=2, lr=1e-3,
                                **changes)
    return reinforce_loop.train_reinforce(policy, tokenizer, toy_reward, PROMPTS, cfg, progress=False)


def test_float32_overflow_in_reinforce_is_fatal_and_names_the_iteration(tokenizer):
    with pytest.raises(FloatingPointError, match="non-finite gradient norm at iteration 1 "):
        reinforce_with_inf_gradients(tokenizer, at={2}, iterations=3, amp="none")


def test_fp16_reinforce_overflowing_at_every_iteration_stops_naming_the_iteration(tokenizer):
    with pytest.raises(FloatingPointError, match="skipped 20 steps in a row at iteration 19 "):
        reinforce_with_inf_gradients(tokenizer, at=range(1, 1000), iterations=30, amp="fp16")
