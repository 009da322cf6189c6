"""The GPU profile's exact settings run here (on the tiny model, 1-2 steps), so that they do not
first fail on a user's Colab; GPU-only switches (fp16 autocast) are skipped cleanly on CPU."""

import torch

from alignlib import config, reinforce, reward
from test_reinforce import PROMPTS, toy_reward
from test_reward import toy_pairs

FULL = config.get_profile("full")


def test_full_reward_model_settings_run_on_cpu(tiny_rm, tokenizer):
    for cfg in (FULL.rm_scalar, FULL.rm_prob):
        capped = config.with_overrides(cfg, max_steps=1)
        model = tiny_rm(num_labels=cfg.num_labels, lora_target_modules=cfg.lora_target_modules)
        pairs = toy_pairs() * 2  # enough for one full batch of FULL's batch size
        hist = reward.train_reward_model(model, tokenizer, pairs, capped, FULL.data.max_length, progress=False)
        assert len(hist["step"]) == 1 and torch.isfinite(torch.tensor(hist["loss"])).all()
        assert not torch.is_autocast_enabled("cpu")  # fp16 autocast (rm_prob) was a no-op on CPU
    assert FULL.rm_prob.amp == "fp16" and FULL.rm_prob.num_labels == 10


def test_full_reinforce_settings_run_on_cpu(tokenizer):
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    torch.manual_seed(0)
    policy = LlamaForCausalLM(tiny_config(tokenizer))
    cfg = config.with_overrides(FULL.reinforce, iterations=1)
    prompts = PROMPTS * 4  # FULL samples 16 prompts per iteration
    hist = reinforce.train_reinforce(policy, tokenizer, toy_reward, prompts, cfg, progress=False)
    assert hist["iteration"] == [1] and hist["response/length"][0] <= FULL.reinforce.max_new_tokens
