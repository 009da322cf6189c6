"""The run helpers that need no training: prompts, and which reward model a run optimised."""

import pytest

from alignlib import config, runs
from alignlib.data import PreferencePair


def pair(text):
    return PreferencePair(({"role": "user", "content": text},), "yes", "no", "t")


def test_unique_prompts_drop_repeats_and_count_the_prompts_over_the_budget(tokenizer):
    pairs = [pair("Hi"), pair("Hi"), pair("long " * 300), pair("Bye")]
    prompts, skipped = runs.unique_prompts(pairs, tokenizer, max_prompt_tokens=64)
    assert [p[-1]["content"] for p in prompts] == ["Hi", "Bye"] and skipped == 1


def test_evaluation_prompts_start_with_the_sky_and_hold_eval_prompts(tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, eval_prompts=3)
    prompts = runs.evaluation_prompts([pair("a"), pair("b"), pair("c"), pair("a")], tokenizer, cfg)
    assert prompts[0] == runs.SKY and [p[-1]["content"] for p in prompts[1:]] == ["a", "b"]


def test_trained_on_reads_the_reward_model_from_the_record():
    assert runs.trained_on({"config": {"reward_model": "results/cpu/adapters/rm_prob"}}) == "rm_prob"
    assert runs.trained_on({"config": {"reward_model": "checkpoints/cpu/rm_scalar"}}) == "rm_scalar"
    with pytest.raises(ValueError, match="does not name its reward model"):
        runs.trained_on({"name": "reinforce_old", "config": {}})
