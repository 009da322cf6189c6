"""The run helpers that need no training: prompts, and which reward model a run optimised."""

from pathlib import Path

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


def test_pairs_seen_counts_every_epoch_unless_max_steps_stopped_the_run():
    cfg = config.with_overrides(config.get_profile("cpu").rm_scalar, epochs=3, batch_size=4, grad_accum=2)
    assert runs.pairs_seen({"step": list(range(1, 16))}, 40, cfg) == 120  # 3 epochs of 5 steps of 8 pairs
    assert runs.pairs_seen({"step": list(range(1, 6))}, 400, cfg) == 40  # max_steps stopped it after 5 steps
    assert runs.pairs_seen({"step": list(range(1, 6))}, 400, cfg, processes=2) == 80


def test_a_resumed_records_training_time_and_rates_are_recomputed_from_every_step():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "report"))
    import migrate_train_time

    rm = {"epochs": 2, "batch_size": 2, "grad_accum": 1}
    curve = {"step": [1, 2, 3, 4], "time/step": [10.0, 10.0, 20.0, 20.0], "train/tokens": [100, 100, 100, 100]}
    # resumed after step 2: the process's timer saw only the last 40 s, and one epoch's 4 pairs were counted
    metrics = {"train_wall_time_s": 40.0, "train_tokens_per_s": 10.0, "train_pairs_per_s": 0.1, "train_pairs": 4,
               "train_model_gflops": 2.0, "matmul_fraction": 0.2}
    record = {"wall_time_s": 100.0, "config": {"rm": rm}, "curve": curve, "metrics": metrics}
    new = migrate_train_time.recomputed(record)
    assert new["metrics"]["train_wall_time_s"] == 60.0 and new["wall_time_s"] == 120.0
    assert new["metrics"]["train_tokens_per_s"] == pytest.approx(400 / 60)
    assert new["metrics"]["train_pairs_per_s"] == pytest.approx(8 / 60)  # 2 epochs of 4 pairs
    assert new["metrics"]["train_model_gflops"] == pytest.approx(2.0 * (400 / 60) / 10.0)
    assert migrate_train_time.recomputed(new) is None  # idempotent
    assert migrate_train_time.recomputed({**record, "curve": {"step": [1]}}) is None  # no time/step: left alone


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
