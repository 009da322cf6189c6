"""The GPU profile's exact settings run here, on the tiny model for 1-2 steps, so that they do not
first fail on a user's Colab: fp32 for the scalar RM and REINFORCE, fp16 autocast with loss scaling
for the probabilistic RM (on CPU too: torch has fp16 autocast and a GradScaler for CPUs)."""

import numpy as np
import torch

from alignlib import config, reinforce_loop, reward_model_loop
from test_reinforce import PROMPTS, toy_reward
from test_reward import toy_pairs

FULL = config.get_profile("full")


def test_full_reward_model_settings_run_on_cpu(tiny_rm, tokenizer, monkeypatch):
    monkeypatch.delenv("ALIGNLIB_AMP", raising=False)
    for cfg, autocast_seen in ((FULL.rm_scalar, (False, None)), (FULL.rm_prob, (True, torch.float16))):
        capped = config.with_overrides(cfg, max_steps=2)
        model = tiny_rm(num_labels=cfg.num_labels, lora_target_modules=cfg.lora_target_modules)
        seen = []
        model.get_base_model().model.register_forward_pre_hook(
            lambda module, args: seen.append((torch.is_autocast_enabled("cpu"),
                                              torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)))
        pairs = toy_pairs() * 2  # enough for two full batches of FULL's batch size
        hist = reward_model_loop.train_reward_model(model, tokenizer, pairs, capped, FULL.data.max_length, progress=False)
        assert len(hist["step"]) == 2 and np.isfinite(hist["train/loss"]).all()
        assert seen == [autocast_seen] * 2  # the training forward passes ran in the profile's precision


def test_full_reinforce_settings_run_on_cpu(tokenizer):
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_config(tokenizer))
    with torch.no_grad():  # peaked next-token distributions, as a trained model has: a random tiny model's are flat,
        policy.lm_head.weight.mul_(30)  # so every top-p decision would sort the whole 49k vocabulary (slow, untypical)
    before = policy.lm_head.weight.detach().clone()
    cfg = config.with_overrides(FULL.reinforce, iterations=1)
    prompts = PROMPTS * 4  # FULL samples 16 prompts per iteration
    hist = reinforce_loop.train_reinforce(policy, tokenizer, toy_reward, prompts, cfg, progress=False)
    assert hist["step"] == [1] and np.isfinite(hist["optim/grad_norm"]).all()
    assert not torch.equal(before, policy.lm_head.weight)  # a full fine-tuning step was taken
