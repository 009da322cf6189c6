"""The studies' bookkeeping: which runs they ask for, what they skip, and the ablation table."""

import json

import pytest

from alignlib import config, results, runs, studies


def fake_record(root, name, settings, margins, accuracy):
    path = root / "results" / "cpu" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"train_pairs": settings["data"]["max_train_pairs"], "val_accuracy": accuracy,
               "val_accuracy_ci95": [accuracy - 0.1, accuracy + 0.1], "val_loss": 0.6, "train_wall_time_s": 600.0}
    path.write_text(json.dumps({"config": settings, "metrics": metrics, "margins": margins}))


def settings_of(run):
    name, profile, cfg, extra = run
    return {"data": config.dataclasses.asdict(profile.data), "rm": config.dataclasses.asdict(cfg), **extra}


def test_the_ablation_tunes_on_development_pairs_and_changes_one_thing_per_variant():
    cpu = config.get_profile("cpu")
    by_name = {name: (profile, cfg) for name, profile, cfg, _ in studies.rm_ablation_runs(cpu)}
    assert list(by_name) == [f"rm_dev/{v}" for v in studies.RM_ABLATION]
    base_profile, base = by_name["rm_dev/baseline"]
    assert base == cpu.rm_scalar and base_profile == cpu  # the baseline is notebook 02's scalar RM
    assert by_name["rm_dev/more_pairs"][0].data.max_train_pairs == 2 * cpu.data.max_train_pairs
    assert by_name["rm_dev/all_linear"][1] == config.with_overrides(cpu.rm_scalar, lora_target_modules=studies.ALL_LINEAR)
    with pytest.raises(ValueError, match="no development pairs"):
        studies.rm_ablation_runs(config.get_profile("full"))
    with pytest.raises(ValueError, match="unknown ablation variant"):
        studies.rm_ablation_runs(cpu, ["bigger"])


def test_a_variant_with_a_record_of_the_same_settings_is_skipped(tmp_path, monkeypatch):
    cpu = config.get_profile("cpu")
    baseline, two_epochs = studies.rm_ablation_runs(cpu, ["baseline", "two_epochs"])
    fake_record(tmp_path, "rm_dev/baseline", settings_of(baseline), [1.0], 1.0)
    stale = settings_of(two_epochs) | {"rm": {**settings_of(two_epochs)["rm"], "lr": 1.0}}
    fake_record(tmp_path, "rm_dev/two_epochs", stale, [1.0], 1.0)  # other settings: run again
    monkeypatch.setattr(results, "ROOT", tmp_path)
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
    monkeypatch.setattr(results, "ROOT", tmp_path)
    table = studies.rm_ablation_table("cpu").set_index("variant")
    assert list(table.index) == ["baseline", "all_linear"]
    assert table.loc["baseline", "vs baseline"] == 0.0
    assert table.loc["all_linear", "vs baseline"] == pytest.approx(0.25)  # right on 3 of 4 against 2 of 4
    assert table.loc["all_linear", "LoRA on"].startswith("q_proj, k_proj") and table.loc["baseline", "train min"] == 10
