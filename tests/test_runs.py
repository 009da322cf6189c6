"""The run helpers that need no training: prompts, and which reward model a run optimised."""


import numpy as np
import pytest
import torch

from alignlib import config, prompts, records, runs
from alignlib.data import PreferencePair


def pair(text):
    return PreferencePair(({"role": "user", "content": text},), "yes", "no", "t")


def test_unique_prompts_drop_repeats_and_count_the_prompts_over_the_budget(tokenizer):
    pairs = [pair("Hi"), pair("Hi"), pair("long " * 300), pair("Bye")]
    kept, skipped = prompts.unique_prompts(pairs, tokenizer, max_prompt_tokens=64)
    assert [p[-1]["content"] for p in kept] == ["Hi", "Bye"] and skipped == 1


def test_evaluation_prompts_start_with_the_sky_and_hold_eval_prompts(tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, eval_prompts=3)
    chosen = prompts.evaluation_prompts([pair("a"), pair("b"), pair("c"), pair("a")], tokenizer, cfg)
    assert chosen[0] == prompts.SKY and [p[-1]["content"] for p in chosen[1:]] == ["a", "b"]


def test_trained_on_reads_the_reward_model_from_the_record():
    assert runs.trained_on({"config": {"reward_model": "results/cpu/adapters/rm_prob"}}) == "rm_prob"
    assert runs.trained_on({"config": {"reward_model": "checkpoints/cpu/rm_scalar"}}) == "rm_scalar"
    with pytest.raises(ValueError, match="does not name its reward model"):
        runs.trained_on({"name": "reinforce_old", "config": {}})


def test_a_profile_takes_its_own_reward_model_before_the_published_cpu_one(tmp_path, monkeypatch):
    from alignlib import records

    monkeypatch.setattr(records, "ROOT", tmp_path)

    def adapter(path):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "adapter_config.json").write_text("{}")
        return tmp_path / path

    with pytest.raises(FileNotFoundError, match="notebook 02_scalar_reward_model"):
        records.find_adapter("full", "rm_scalar")  # none anywhere: which notebook trains it
    cpu = adapter("results/cpu/adapters/rm_scalar")
    assert records.find_adapter("full", "rm_scalar") == cpu  # nothing of its own: the published cpu model
    published = adapter("results/full/adapters/rm_scalar")
    assert records.find_adapter("full", "rm_scalar") == published  # the full profile's own, trained on a GPU
    local = adapter("checkpoints/full/rm_scalar")
    assert records.find_adapter("full", "rm_scalar") == local  # trained on this machine
    recorded = adapter("checkpoints/full/seeds/rm_scalar")
    assert records.find_adapter("full", "checkpoints/full/seeds/rm_scalar") == recorded  # the folder a record names


def test_the_sft_replies_are_sampled_once_and_kept_for_every_later_run(tmp_path, monkeypatch, tokenizer, tiny_policy):
    """Every run of a profile is judged against the same SFT replies (half an hour at cpu): the first setup samples
    them, the later ones read them; another budget, code or profile samples again (smoke keeps none)."""
    from alignlib import evaluate

    monkeypatch.setattr(records, "ROOT", tmp_path)
    monkeypatch.setattr(records, "loaded_code_version", lambda: "abc")
    calls = []
    monkeypatch.setattr(evaluate, "generate_for_eval", lambda policy, tok, p, cfg: calls.append(cfg.eval_budget) or {
        "texts": ["x"] * len(p), "tokens": [[5]] * len(p), "ended": [True] * len(p), "budget": cfg.eval_budget})
    cpu = config.get_profile("cpu")
    prompts = [[{"role": "user", "content": "hi"}]]
    first = runs.sft_eval_replies(cpu, tiny_policy, tokenizer, prompts, cpu.reinforce)
    again = runs.sft_eval_replies(cpu, tiny_policy, tokenizer, prompts, cpu.reinforce)
    assert first == again and calls == [cpu.reinforce.eval_budget]
    runs.sft_eval_replies(cpu, tiny_policy, tokenizer, prompts, config.with_overrides(cpu.reinforce, eval_max_new_tokens=64))
    assert calls == [cpu.reinforce.eval_budget, 64]
    monkeypatch.setattr(records, "loaded_code_version", lambda: "def")  # other code: sampled again
    runs.sft_eval_replies(cpu, tiny_policy, tokenizer, prompts, cpu.reinforce)
    smoke = config.get_profile("smoke")
    for _ in range(2):
        runs.sft_eval_replies(smoke, tiny_policy, tokenizer, prompts, smoke.reinforce)
    assert len(calls) == 5 and not (tmp_path / "checkpoints" / "smoke" / "sft_replies").exists()
    monkeypatch.setattr(records, "loaded_code_version", lambda: "def+dirty")  # uncommitted code: never kept
    runs.sft_eval_replies(cpu, tiny_policy, tokenizer, prompts, cpu.reinforce)
    runs.sft_eval_replies(cpu, tiny_policy, tokenizer, prompts, cpu.reinforce)
    assert len(calls) == 7


def test_pairs_seen_counts_every_epoch_unless_max_steps_stopped_the_run():
    cfg = config.with_overrides(config.get_profile("cpu").rm_scalar, epochs=3, batch_size=4, grad_accum=2)
    assert runs.pairs_seen({"step": list(range(1, 16))}, 40, cfg) == 120  # 3 epochs of 5 steps of 8 pairs
    assert runs.pairs_seen({"step": list(range(1, 6))}, 400, cfg) == 40  # max_steps stopped it after 5 steps
    assert runs.pairs_seen({"step": list(range(1, 6))}, 400, cfg, processes=2) == 80


def test_the_reload_check_passes_a_faithful_copy_and_stops_on_a_different_model(tiny_rm, tokenizer, tmp_path, monkeypatch):
    import copy

    import torch

    from alignlib import models, records
    from test_reward import toy_pairs

    monkeypatch.setattr(records, "ROOT", tmp_path)
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


# ------------------------------------------------------------------- reusing finished runs ($ALIGNLIB_REUSE_RUNS)

def reuse_setup(tmp_path, monkeypatch, version="abc123"):
    from alignlib import records

    monkeypatch.setattr(records, "ROOT", tmp_path)
    monkeypatch.setattr(records, "loaded_code_version", lambda: version)
    monkeypatch.delenv("ALIGNLIB_AMP", raising=False)
    monkeypatch.setenv(records.REUSE_ENV, "1")


def write_fake(tmp_path, name, settings, **fields):
    import json

    path = tmp_path / "results" / "smoke" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "config": settings, "code_version": "abc123", "precision": "none",
              "created": "2026-12-01 10:00:00", "metrics": {}, **fields}
    path.write_text(json.dumps(record))
    return record


def test_a_record_is_reused_only_when_asked_and_made_by_this_code_with_these_settings(tmp_path, monkeypatch):
    reuse_setup(tmp_path, monkeypatch)
    settings = {"rm": {"lr": 1e-4, "modules": ("q_proj", "v_proj")}}
    write_fake(tmp_path, "rm_x", settings)
    assert records.reusable("rm_x", "smoke", settings, "none")["code_version"] == "abc123"  # tuples as lists
    assert records.reusable("rm_y", "smoke", settings, "none") is None  # no record
    assert records.reusable("rm_x", "smoke", {"rm": {"lr": 2e-4, "modules": ["q_proj", "v_proj"]}}, "none") is None
    assert records.reusable("rm_x", "smoke", settings, "bf16") is None  # this machine would compute in bf16
    monkeypatch.setenv(records.REUSE_ENV, "")
    assert records.reusable("rm_x", "smoke", settings, "none") is None  # not asked: every run trains
    assert records.reusable("rm_x", "smoke", settings, "none", always=True) is not None  # a study always asks
    for version in ("def456", "abc123+dirty", "unknown"):  # other or uncommitted code
        reuse_setup(tmp_path, monkeypatch, version)
        assert records.reusable("rm_x", "smoke", settings, "none") is None


def test_a_reused_reward_model_is_loaded_and_checked_not_trained(tiny_rm, tokenizer, tmp_path, monkeypatch):
    from dataclasses import asdict

    from alignlib import data, models, reward_model_loop, scoring
    from test_reward import toy_pairs

    reuse_setup(tmp_path, monkeypatch)
    smoke = config.get_profile("smoke")
    cfg = config.with_overrides(smoke.rm_scalar, amp="none")
    prefs = data.PreferenceData(toy_pairs()[:4], toy_pairs()[4:8], "toy")
    model = tiny_rm(seed=2)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    monkeypatch.setattr(models, "load_reward_model", lambda adapter, labels, trainable=False: model)
    monkeypatch.setattr(reward_model_loop, "train_reward_model", lambda *a, **k: pytest.fail("trained again"))
    val = scoring.pair_rewards(model, tokenizer, prefs.validation, smoke.data.max_length)
    margins = (val["chosen"] - val["rejected"]).tolist()
    accuracy = float(np.mean(np.asarray(margins) > 0))
    settings = {"data": asdict(smoke.data), "rm": asdict(cfg)}
    write_fake(tmp_path, "rm_x", settings, adapter="adapter", margins=margins, metrics={"val_accuracy": accuracy})
    record, loaded, again = runs.reward_model_run("rm_x", smoke, cfg, tokenizer, prefs)
    assert record["name"] == "rm_x" and loaded is model
    np.testing.assert_allclose(again["chosen"] - again["rejected"], margins, atol=1e-6)
    write_fake(tmp_path, "rm_x", settings, adapter="adapter", margins=[m + 0.5 for m in margins],
               metrics={"val_accuracy": accuracy})  # an adapter that is not the recorded model
    with pytest.raises(RuntimeError, match="does not reproduce its record's validation margins"):
        runs.reward_model_run("rm_x", smoke, cfg, tokenizer, prefs)


def test_a_reused_reinforce_run_returns_its_record_without_training(tmp_path, monkeypatch):
    from dataclasses import asdict

    from alignlib import reinforce_loop

    reuse_setup(tmp_path, monkeypatch)
    smoke = config.get_profile("smoke")
    cfg = config.with_overrides(smoke.reinforce, amp="none")
    setup = runs.ReinforceSetup(None, None, [], 0, [], {}, {}, "results/smoke/adapters/rm_x", "toy")
    weights = tmp_path / setup.reward_model / "adapter_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"the reward model it was trained against")
    write_fake(tmp_path, "reinforce_x", {"reinforce": asdict(cfg), "reward_model": setup.reward_model, "mode": "a"},
               reward_model_sha256=records.adapter_digest(setup.reward_model))
    monkeypatch.setattr(reinforce_loop, "train_reinforce", lambda *a, **k: pytest.fail("trained again"))
    assert runs.reinforce_run("reinforce_x", smoke, cfg, setup, extra_config={"mode": "a"})["name"] == "reinforce_x"
    monkeypatch.setattr(reinforce_loop, "train_reinforce", lambda *a, **k: (_ for _ in ()).throw(KeyError("trains")))
    monkeypatch.setattr(runs.models, "load_policy", lambda: None)
    with pytest.raises(KeyError, match="trains"):  # other settings: trained
        runs.reinforce_run("reinforce_x", smoke, cfg, setup, extra_config={"mode": "b"})
    moved = runs.ReinforceSetup(None, None, [], 0, [], {}, {}, "checkpoints/smoke/rm_x", "toy")  # e.g. a fresh clone's
    (tmp_path / moved.reward_model).mkdir(parents=True)
    (tmp_path / moved.reward_model / "adapter_model.safetensors").write_bytes(weights.read_bytes())
    monkeypatch.setattr(reinforce_loop, "train_reinforce", lambda *a, **k: pytest.fail("trained again"))
    assert runs.reinforce_run("reinforce_x", smoke, cfg, moved, extra_config={"mode": "a"})["name"] == "reinforce_x"
    monkeypatch.setattr(reinforce_loop, "train_reinforce", lambda *a, **k: (_ for _ in ()).throw(KeyError("trains")))
    weights.write_bytes(b"a reward model trained again since")  # same folder, other weights: trained
    with pytest.raises(KeyError, match="trains"):
        runs.reinforce_run("reinforce_x", smoke, cfg, setup, extra_config={"mode": "a"})


@pytest.mark.parametrize("profile_name, device, expected", [("cpu", "cpu", False), ("cpu", "cuda", True),
                                                           ("full", "cuda", True), ("smoke", "cpu", True)])
def test_train_long_runs_trains_on_a_gpu_and_shows_the_published_records_on_a_cpu(monkeypatch, profile_name, device,
                                                                                  expected, capsys):
    monkeypatch.delenv(runs.TRAIN_ENV, raising=False)
    monkeypatch.setattr(runs.machine, "device", lambda: torch.device(device))
    assert runs.train_long_runs(None, config.get_profile(profile_name), ["rm_scalar"]) is expected
    out = capsys.readouterr().out
    assert "rm_scalar:" in out and ("training them here" if expected else "set TRAIN = True") in out


def test_train_long_runs_follows_the_choice_then_the_environment(monkeypatch):
    monkeypatch.setattr(runs.machine, "device", lambda: torch.device("cpu"))
    cpu = config.get_profile("cpu")
    monkeypatch.setenv(runs.TRAIN_ENV, "1")
    assert runs.train_long_runs(None, cpu, []) is True
    assert runs.train_long_runs(False, cpu, []) is False  # the notebook's own switch wins
    monkeypatch.setenv(runs.TRAIN_ENV, "0")
    assert runs.train_long_runs(None, config.get_profile("smoke"), []) is False
    monkeypatch.setenv(runs.TRAIN_ENV, "maybe")
    with pytest.raises(ValueError, match="use 1"):
        runs.train_long_runs(None, cpu, [])
