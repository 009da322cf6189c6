"""The studies' bookkeeping: which runs they ask for, what they skip, and the ablation table."""

import dataclasses
import json

import pytest
import torch

from alignlib import config, evaluate, models, precision, records, reinforce_loop, runs, scoring, studies, summaries, tables


def made_by_this_code(record: dict, amp: str) -> dict:
    """The fields by which `records.reusable` knows a run this code made here (with `this_code` patched in)."""
    return record | {"code_version": "abc", "precision": precision.resolve(amp, "cpu").amp, "created": "2026-12-01"}


@pytest.fixture
def this_code(monkeypatch):
    monkeypatch.setattr(records, "loaded_code_version", lambda: "abc")
    monkeypatch.delenv(precision.AMP_ENV, raising=False)


def fake_record(root, name, settings, margins, accuracy):
    path = root / "results" / "cpu" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"train_pairs": settings["data"]["max_train_pairs"], "val_accuracy": accuracy,
               "val_accuracy_ci95": [accuracy - 0.1, accuracy + 0.1], "val_loss": 0.6, "train_wall_time_s": 600.0, "n_pairs": len(margins)}
    record = {"config": settings, "metrics": metrics, "margins": margins, "peak_memory_mb": 2048.0}
    path.write_text(json.dumps(made_by_this_code(record, settings["rm"]["amp"])))


def settings_of(run):
    name, profile, cfg, extra = run
    return {"data": config.dataclasses.asdict(profile.data), "rm": config.dataclasses.asdict(cfg), **extra}


def test_the_ablation_tunes_on_development_pairs_and_changes_one_thing_per_variant():
    cpu = config.get_profile("cpu")
    by_name = {name: (profile, cfg) for name, profile, cfg, _ in studies.rm_ablation_runs(cpu)}
    assert list(by_name) == [f"rm_dev/{v}" for v in config.RM_ABLATION]
    base_profile, base = by_name["rm_dev/baseline"]
    assert base == config.with_overrides(cpu.rm_scalar, **config.RM_ABLATION_BASE) and base_profile == cpu
    # setting a chosen variant in the profile leaves every variant's settings, and so their records, as they were
    tuned = dataclasses.replace(cpu, rm_scalar=by_name["rm_dev/all_linear"][1])
    def settings(profile):
        return [(name, p.data, cfg, extra) for name, p, cfg, extra in studies.rm_ablation_runs(profile)]

    assert settings(tuned) == settings(cpu)
    assert by_name["rm_dev/more_pairs"][0].data.max_train_pairs == 2 * cpu.data.max_train_pairs
    assert by_name["rm_dev/all_linear"][1] == config.with_overrides(cpu.rm_scalar, lora_target_modules=config.ALL_LINEAR)
    with pytest.raises(ValueError, match="no development pairs"):
        studies.rm_ablation_runs(config.get_profile("full"))
    with pytest.raises(ValueError, match="unknown ablation variant"):
        studies.rm_ablation_runs(cpu, ["bigger"])


def test_a_variant_this_code_recorded_with_the_same_settings_is_skipped(tmp_path, monkeypatch, this_code):
    cpu = config.get_profile("cpu")
    baseline, two_epochs = studies.rm_ablation_runs(cpu, ["baseline", "two_epochs"])
    fake_record(tmp_path, "rm_dev/baseline", settings_of(baseline), [1.0], 1.0)
    stale = settings_of(two_epochs) | {"rm": {**settings_of(two_epochs)["rm"], "lr": 1.0}}
    fake_record(tmp_path, "rm_dev/two_epochs", stale, [1.0], 1.0)  # other settings: run again
    monkeypatch.setattr(records, "ROOT", tmp_path)
    trained = []
    monkeypatch.setattr(runs, "reward_model_run", lambda name, profile, cfg, tok, prefs, **kw: trained.append(
        (name, len(prefs.train), len(prefs.validation), kw["extra_config"]["evaluated_on"])))
    studies.rm_ablation(cpu, ["baseline", "two_epochs"])
    assert trained == [("rm_dev/two_epochs", 1800, 400, "development")]


def test_the_ablation_table_pairs_each_variant_with_the_baseline(tmp_path, monkeypatch):
    cpu = config.get_profile("cpu")
    baseline, all_linear = studies.rm_ablation_runs(cpu, ["baseline", "all_linear"])
    fake_record(tmp_path, "rm_dev/baseline", settings_of(baseline), [1.0, -1.0, -1.0, 1.0], 0.5)
    fake_record(tmp_path, "rm_dev/all_linear", settings_of(all_linear), [1.0, 1.0, 2.0, -0.5], 0.75)
    monkeypatch.setattr(records, "ROOT", tmp_path)
    table = tables.rm_ablation_table(summaries.rm_ablation_records("cpu")).set_index("variant")
    assert list(table.index) == ["baseline", "all_linear"]
    assert table.loc["baseline", "vs baseline"] == 0.0
    assert table.loc["all_linear", "vs baseline"] == pytest.approx(0.25)  # right on 3 of 4 against 2 of 4
    assert table.loc["all_linear", "LoRA on"].startswith("q_proj, k_proj") and table.loc["baseline", "train min"] == 10
    assert table.loc["all_linear", "dev pairs"] == 4 and table.loc["all_linear", "peak memory GB"] == 2.0
    summary = summaries.write_rm_ablation_summary("cpu")  # what the report and notebook 02 read
    assert json.loads((tmp_path / "results" / "cpu" / "rm_ablation.json").read_text()) == summary
    assert [v["variant"] for v in summary["variants"]] == ["baseline", "all_linear"]
    assert summary["variants"][1]["vs baseline"] == pytest.approx(0.25)
    assert summary["missing"] == ["two_epochs", "more_pairs"] and summary["chosen"] is None  # not before all have run


def row(variant, accuracy, lead_ci):
    return {"variant": variant, "dev accuracy": accuracy, "vs baseline 95% CI": lead_ci}


def test_the_ablation_chooses_a_variant_only_for_a_lead_outside_the_noise():
    base = row("baseline", 0.60, [0.0, 0.0])
    assert summaries.choose_rm_variant([base, row("all_linear", 0.63, [-0.01, 0.07])]) == "baseline"
    assert summaries.choose_rm_variant([base, row("all_linear", 0.63, [0.01, 0.07]),
                                      row("two_epochs", 0.65, [0.02, 0.09]), row("more_pairs", 0.70, [-0.01, 0.2])]) \
        == "two_epochs"  # the best of the leads outside the noise, not the highest point estimate


def test_the_cpu_profile_trains_the_variant_its_ablation_chose():
    summary = records.read_summary("rm_ablation", "cpu")
    if summary is None or summary.get("chosen") is None:
        pytest.skip("the ablation has not finished at the cpu profile (make rm-ablation)")
    cpu = config.get_profile("cpu")
    changes, factor = config.RM_ABLATION[summary["chosen"]]
    expected = {**config.RM_ABLATION_BASE, **changes}
    assert records.same_settings({key: getattr(cpu.rm_scalar, key) for key in expected}, expected)
    chosen = next(v for v in summary["variants"] if v["variant"] == summary["chosen"])
    assert cpu.data.max_train_pairs == chosen["train pairs"]


# ------------------------------------------------------------------------------------------ seeds

def base_record(root, name, cfg, reward_model="results/cpu/adapters/rm_scalar", mode=None, metrics=None, folder=""):
    record = {k: None for k in records.REQUIRED} | {"code_version": "abc"}
    record["config"] = {"reinforce": config.dataclasses.asdict(cfg), "reward_model": reward_model,
                        **({"reward_mode": mode} if mode else {})}
    record["metrics"] = metrics or {}
    path = root / "results" / "cpu" / folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_each_repeat_takes_its_settings_from_the_notebooks_record_and_changes_only_the_seed(tmp_path, monkeypatch):
    cpu = config.get_profile("cpu").reinforce
    rloo = config.with_overrides(cpu, baseline="rloo", samples_per_prompt=2, prompts_per_iter=4)
    base_record(tmp_path, "reinforce_rloo", rloo)
    base_record(tmp_path, "reinforce_prob_sampled", cpu, "results/cpu/adapters/rm_prob", "sampled")
    monkeypatch.setattr(records, "ROOT", tmp_path)
    plan = studies.seed_runs("cpu", ["reinforce_rloo", "reinforce_prob_sampled"])
    assert [name for name, _, _ in plan] == ["seeds/reinforce_rloo_seed1", "seeds/reinforce_rloo_seed2",
                                             "seeds/reinforce_prob_sampled_seed1", "seeds/reinforce_prob_sampled_seed2"]
    assert plan[1][1] == config.with_overrides(rloo, seed=2)
    assert plan[0][2] == {"reward_model": "results/cpu/adapters/rm_scalar", "reward_mode": "expected",
                          "seed_of": "reinforce_rloo"}
    assert plan[2][2]["reward_mode"] == "sampled" and plan[2][2]["reward_model"].endswith("rm_prob")
    with pytest.raises(FileNotFoundError, match="notebook 03_reinforce has not run"):
        studies.seed_runs("cpu", ["reinforce_ema"])


def test_repeats_already_recorded_with_the_same_settings_are_not_trained_again(tmp_path, monkeypatch, this_code):
    cpu = config.get_profile("cpu")
    base_record(tmp_path, "reinforce_ema", cpu.reinforce)
    adapter = tmp_path / "results" / "cpu" / "adapters" / "rm_scalar"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"the reward model")
    monkeypatch.setattr(records, "ROOT", tmp_path)
    for name, cfg, extra in studies.seed_runs("cpu", ["reinforce_ema"]):
        path = tmp_path / "results" / "cpu" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"config": {"reinforce": config.dataclasses.asdict(cfg), **extra},
                  "reward_model_sha256": records.adapter_digest(adapter)}
        path.write_text(json.dumps(made_by_this_code(record, cfg.amp)))
    monkeypatch.setattr(runs, "reinforce_run", lambda *a, **k: pytest.fail("trained a repeat that was done"))
    monkeypatch.setattr(scoring, "load_scorer", lambda *a, **k: pytest.fail("loaded a reward model for nothing"))
    studies.reinforce_seeds(cpu, ["reinforce_ema"])


def test_the_seeds_summary_gives_across_seed_intervals_and_lists_what_is_missing(tmp_path, monkeypatch):
    cpu = config.get_profile("cpu").reinforce
    gains = {"reinforce_ema": [0.2, 0.4, 0.3], "reinforce_ema_kl": [-0.1, 0.0, 0.05]}
    for run, run_gains in gains.items():
        for seed, gain in enumerate(run_gains):
            metrics = {m: 1.0 for m in summaries.SEED_METRICS} | {"reward_delta_mean": gain, "reward_delta_ci95": [0, 1]}
            name, folder = (run, "") if seed == 0 else (f"{run}_seed{seed}", "seeds")
            base_record(tmp_path, name, config.with_overrides(cpu, seed=seed), metrics=metrics, folder=folder)
    base_record(tmp_path, "reinforce_rloo", cpu, metrics={})
    monkeypatch.setattr(records, "ROOT", tmp_path)
    out = summaries.seeds_summary("cpu", ["reinforce_ema", "reinforce_rloo", "reinforce_ema_kl"])
    ema = out["configs"]["reinforce_ema"]
    assert ema["per_seed"]["reward_delta_mean"] == gains["reinforce_ema"]
    assert ema["across_seeds"]["reward_delta_mean"]["mean"] == pytest.approx(0.3)
    assert ema["across_seeds"]["reward_delta_mean"]["ci95"] == pytest.approx([0.0516, 0.5484], abs=1e-4)
    assert ema["code_versions"] == ["abc"]
    assert out["incomplete"] == {"reinforce_rloo": {"missing_seeds": [1, 2]}}
    # rankings only between complete configurations: EMA + KL against EMA, not RLOO against EMA
    ranked = {(r["a"], r["b"], r["metric"]): r for r in out["rankings"]}
    assert set(ranked) == {("reinforce_ema_kl", "reinforce_ema", m) for m in ("reward_delta_mean", "win_rate", "kl_to_sft")}
    gain = ranked[("reinforce_ema_kl", "reinforce_ema", "reward_delta_mean")]
    assert gain["diff"] == pytest.approx(-0.3166667) and gain["holds"] is True
    assert ranked[("reinforce_ema_kl", "reinforce_ema", "kl_to_sft")]["holds"] is False  # equal KLs: no ranking


# ------------------------------------------------------------------------------ over-optimisation

def test_the_two_halves_share_no_prompt():
    from test_reward import toy_pairs

    pairs = toy_pairs() + toy_pairs()[:4]  # prompts 0-3 twice
    proxy, judge = studies.halves_by_prompt(pairs, seed=0)
    assert len(proxy) + len(judge) == len(pairs) and len(judge) == len(pairs) // 2
    assert not {p.prompt_key for p in proxy} & {p.prompt_key for p in judge}


def test_the_overoptimisation_run_is_judged_every_part_and_resumes_its_points(tokenizer, tmp_path, monkeypatch, this_code):
    """Tiny policies, toy proxy and judge: a point at iterations 0, 1 and 2; at 0 the policy is SFT
    (no gain, no KL); a run whose last point was lost re-trains nothing before it and recomputes only it."""
    from test_loops import PROMPTS, smoke_rl
    from test_reinforce import toy_reward
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    def tiny_sft():
        torch.manual_seed(0)
        return LlamaForCausalLM(tiny_config(tokenizer)).eval()

    monkeypatch.setattr(records, "ROOT", tmp_path)
    monkeypatch.setattr(models, "load_policy", tiny_sft)
    cfg = smoke_rl(iterations=2, eval_batch_size=2, eval_max_new_tokens=12)  # the training cap is 4
    sft = evaluate.generate_for_eval(tiny_sft(), tokenizer, PROMPTS[:2], cfg)
    sft["rewards"] = toy_reward(PROMPTS[:2], sft["texts"]).numpy()
    at_cap = evaluate.cut_replies(sft, cfg.max_new_tokens, tokenizer)
    at_cap["rewards"] = toy_reward(PROMPTS[:2], at_cap["texts"]).numpy()
    setup = runs.ReinforceSetup(tokenizer, toy_reward, PROMPTS, 0, PROMPTS[:2], sft, at_cap, "rm", "toy")
    judge = lambda prompts, texts: torch.tensor([float(len(t)) for t in texts])  # noqa: E731
    profile = config.get_profile("cpu")
    trained = Recorder(monkeypatch, reinforce_loop, "train_reinforce")
    record = studies.overopt_run("overopt/x", profile, cfg, setup, judge, 1, {"s": 1})
    points = record["points"]
    assert [p["iteration"] for p in points] == [0, 1, 2] and record["metrics"]["complete"]
    # judged at the training cap, against SFT's replies cut to it: before training, exactly SFT's replies
    assert [p["budget"] for p in points] == [4, 4, 4]
    assert points[0]["kl_to_sft"] == 0 and points[0]["proxy"]["reward_delta_mean"] == 0
    assert points[0]["judge"]["reward_delta_mean"] == 0 and points[2]["kl_to_sft"] != 0
    assert [c.iterations for c in trained.configs] == [1, 2]
    path = tmp_path / "results" / "cpu" / "overopt" / "x.json"
    lost = json.loads(path.read_text()) | {"points": points[:2]}
    path.write_text(json.dumps(lost))  # killed before the last point was written (its checkpoint is there)
    trained.configs.clear()
    again = studies.overopt_run("overopt/x", profile, cfg, setup, judge, 1, {"s": 1})["points"]
    assert [c.iterations for c in trained.configs] == [2]  # resumes at iteration 2: trains nothing more
    assert again[2]["proxy"] == points[2]["proxy"] and again[2]["kl_to_sft"] == pytest.approx(points[2]["kl_to_sft"])


class Recorder:
    def __init__(self, monkeypatch, module, name):
        self.configs, fn = [], getattr(module, name)

        def wrapped(*args, **kwargs):
            self.configs.append(args[4])
            return fn(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)


def test_a_judges_interval_in_sft_standard_deviations_by_hand():
    # gain 0.5 reward units = 1.0 sd, so the sd is 0.5 and the interval [0.2, 0.8] is [0.4, 1.6] sd
    said = summaries.in_sd({"reward_delta_mean": 0.5, "reward_delta_sd_units": 1.0, "reward_delta_ci95": [0.2, 0.8]})
    assert said == pytest.approx([0.4, 1.6])
    assert summaries.in_sd({"reward_delta_mean": 0.0, "reward_delta_sd_units": 0.0, "reward_delta_ci95": [0, 0]}) is None


def test_a_records_precision_reads_in_words():
    assert tables.precision_label({"precision": "none"}) == "float32"
    assert tables.precision_label({"precision": "bf16"}) == "bf16 autocast"
    assert tables.precision_label({"precision": "fp16"}) == "fp16 autocast with loss scaling"
