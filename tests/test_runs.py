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


def test_a_profile_takes_its_own_reward_model_before_the_published_cpu_one(tmp_path, monkeypatch):
    from alignlib import results

    monkeypatch.setattr(results, "ROOT", tmp_path)

    def adapter(path):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "adapter_config.json").write_text("{}")
        return tmp_path / path

    cpu = adapter("results/cpu/adapters/rm_scalar")
    assert runs.rm_adapter_dir("full") == cpu  # nothing of its own: the published cpu model
    published = adapter("results/full/adapters/rm_scalar")
    assert runs.rm_adapter_dir("full") == published  # the full profile's own, trained on a GPU
    assert runs.rm_adapter_dir("full", "rm_prob") == tmp_path / "results/cpu/adapters/rm_prob"
    local = adapter("checkpoints/full/rm_scalar")
    assert runs.rm_adapter_dir("full") == local  # trained on this machine


def test_the_reload_check_passes_a_faithful_copy_and_stops_on_a_different_model(tiny_rm, tokenizer, tmp_path, monkeypatch):
    import copy

    import torch

    from alignlib import models, results
    from test_reward import toy_pairs

    monkeypatch.setattr(results, "ROOT", tmp_path)
    smoke = config.get_profile("smoke")
    model = tiny_rm(seed=3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    faithful = copy.deepcopy(model)
    monkeypatch.setattr(models, "load_reward_model", lambda adapter, labels: faithful)
    adapter, diff = runs.save_and_check(model, "rm_x", smoke, smoke.rm_scalar, tokenizer, toy_pairs(), publish=False)
    assert adapter == tmp_path / "checkpoints" / "smoke" / "rm_x" and (adapter / "adapter_config.json").exists()
    assert diff == 0.0
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.base_model.model.score.weight.add_(0.1)  # e.g. a head that was not saved
    monkeypatch.setattr(models, "load_reward_model", lambda adapter, labels: other)
    with pytest.raises(RuntimeError, match="does not reproduce the trained model's rewards"):
        runs.save_and_check(model, "rm_x", smoke, smoke.rm_scalar, tokenizer, toy_pairs(), publish=False)
