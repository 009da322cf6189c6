"""The PDF report builds from the smoke records that `make test` writes (nbval step) and shows their numbers and
the verdicts alignlib.verdicts computed from them. Run after the notebooks: `make test` calls it last."""

import json
import math
import os
from pathlib import Path

import pytest

import report
from alignlib import verdicts
from report import build, sections

ROOT = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("ALIGNLIB_PROFILE", "smoke")


def fmt(x, d=3):
    """x as the report prints it: typst's calc.round rounds x * 10^d half away from zero (0.6725 -> 0.673,
    where Python's format gives 0.672 from the binary 0.67249...)."""
    y = x * 10**d
    return f"{math.copysign(math.floor(abs(y) + 0.5), y) / 10**d:.{d}f}"


def pdf_of(path):
    from pypdf import PdfReader

    reader = PdfReader(path)
    assert len(reader.pages) >= 3
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())  # a phrase may span a line


@pytest.fixture(scope="module")
def pdf_text(tmp_path_factory):
    problems = build.missing_records(PROFILE)
    assert not problems, "run the notebooks at the smoke profile first (make test does):\n" + "\n".join(problems)
    return pdf_of(build.build(PROFILE, tmp_path_factory.mktemp("report") / "report.pdf"))


def record(name):
    return json.loads((ROOT / "results" / PROFILE / f"{name}.json").read_text())


def summary(name):
    path = ROOT / "results" / PROFILE / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} is missing: `make test` writes it with `python -m alignlib {name}` at the smoke profile")
    return json.loads(path.read_text())


def test_report_shows_the_numbers_of_its_records(pdf_text):
    data, rm, ema = record("data"), record("rm_scalar"), record("reinforce_ema")
    assert f"{data['metrics']['n_train']} / {data['metrics']['n_validation']} pairs" in pdf_text
    lo, hi = rm["metrics"]["val_accuracy_ci95"]
    assert f"{fmt(rm['metrics']['val_accuracy'])} [{fmt(lo)}, {fmt(hi)}]" in pdf_text
    assert f"Profile {PROFILE}" in pdf_text
    used = {"none": "float32", "fp16": "fp16 autocast with loss scaling"}.get(ema["precision"], f"{ema['precision']} autocast")
    assert used in pdf_text  # the precision the record states, not a fixed claim
    assert f"up to {ema['metrics']['eval_budget']} tokens" in pdf_text


def test_report_shows_level_2_and_the_cross_judging(pdf_text):
    rm_prob, sampled, comp = record("rm_prob"), record("reinforce_prob_sampled"), record("comparison")
    lo, hi = rm_prob["metrics"]["val_accuracy_ci95"]
    assert f"{fmt(rm_prob['metrics']['val_accuracy'])} [{fmt(lo)}, {fmt(hi)}]" in pdf_text
    assert fmt(sampled["metrics"]["advantage_var"], 2) in pdf_text
    assert f"{fmt(100 * comp['metrics']['reinforce_prob_expected/scalar/win_rate'], 0)}%" in pdf_text


def test_report_states_the_headline_verdicts(pdf_text):
    found = verdicts.findings(record("rm_scalar"), record("reinforce_ema"), record("comparison"))
    assert ("The reward model beats chance" in pdf_text) == found["rm_beats_chance"]
    assert ("REINFORCE raises its reward model's score on held-out prompts" in pdf_text) == found["policy_raises_reward"]
    assert ("The other reward model agrees" in pdf_text) == found["other_judge_agrees"]
    assert "else if" not in pdf_text and "else [" not in pdf_text  # typst code leaked into the text
    assert "not run yet" not in pdf_text


def test_the_report_says_how_much_of_the_gain_is_ending_the_turn_and_how_alike_the_judges_are(pdf_text):
    said = verdicts.ending_the_turn(record("reinforce_ema"))
    opening = {"mostly ending": "Most of the gain at the training cap is ending the turn.",
               "partly ending": "Part of the gain at the training cap is ending the turn",
               "none at the cap": "At the training cap the gain is within noise."}[said["verdict"]]
    assert opening in pdf_text
    agree = verdicts.judge_agreement(record("rm_scalar")["margins"], record("rm_prob")["margins"])
    assert f"correlate at {fmt(agree['margin_correlation'], 2)}" in pdf_text
    assert "k1" in pdf_text  # the KL estimator is named


def test_the_published_report_needs_the_original_settings_and_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    problems = build.missing_records("cpu")
    assert "results/full/reinforce_ema.json is missing: run python -m alignlib reinforce --profile full (make rerun)" in problems
    assert not any("full/" in p for p in build.missing_records("smoke"))  # a smoke report builds without them


def test_missing_record_names_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    with pytest.raises(SystemExit, match="run notebooks/02_scalar_reward_model.ipynb"):
        build.build(PROFILE, tmp_path / "x.pdf")


def test_a_policy_whose_reward_model_was_trained_again_is_named_stale(tmp_path, monkeypatch):
    from alignlib.records import adapter_digest

    monkeypatch.setattr(report, "ROOT", tmp_path)
    weights = tmp_path / "adapters" / "rm_scalar" / "adapter_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"the reward model notebook 03 optimised")
    digest = adapter_digest(weights.parent)
    for name in ("reinforce_ema", "reinforce_rloo"):
        path = tmp_path / "results" / "cpu" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": {"reward_model": str(weights.parent)}, "reward_model_sha256": digest}))
    assert build.stale_policies("cpu") == []
    weights.write_bytes(b"notebook 02 ran again")
    assert build.stale_policies("cpu") == ["reinforce_ema", "reinforce_rloo"]
    weights.unlink()  # no weights in the recorded folder (a fresh clone): nothing to compare, no verdict
    assert build.stale_policies("cpu") == []


def test_report_shows_the_ablation_and_its_verdict(pdf_text):
    ablation = summary("rm_ablation")
    assert f"Tuning on {ablation['variants'][0]['dev pairs']} development pairs" in pdf_text


def test_report_shows_the_seeds_and_withdraws_what_they_do_not_rank(pdf_text):
    seeds = summary("seeds")
    ema = seeds["configs"]["reinforce_ema"]["across_seeds"]["reward_delta_sd_units"]
    lo, hi = ema["ci95"]
    sign = "+" if ema["mean"] >= 0 else "−"
    assert f"{sign}{fmt(abs(ema['mean']), 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}]".replace("-", "−") in pdf_text.replace("-", "−")
    said = [r["verdict"] for r in verdicts.rankings(seeds)]
    assert pdf_text.count("not ranked") >= said.count("withdrawn")
    assert "reinforce_none" in seeds["configs"] or "reinforce_none" in seeds["incomplete"]


def test_report_shows_the_overoptimisation_against_the_held_out_judge(pdf_text):
    overopt = summary("overoptimization")
    assert "Proxy and judge gain against" in pdf_text  # the figure's caption
    said = verdicts.overoptimization(overopt)
    phrases = {"rising": "it is still rising", "falls": "it falls after it beyond noise",
               "within noise": "the end lies within noise of it"}
    trends = [run["trend"] for run in said["runs"].values()]
    for trend, phrase in phrases.items():
        assert pdf_text.count(phrase) == trends.count(trend), phrase
    for run in said["runs"].values():
        assert f"at iteration {run['last']['iteration']}" in pdf_text


def test_the_studies_page_shows_the_studies_summaries():
    tables = sections.studies(PROFILE)
    for v in summary("rm_ablation")["variants"]:
        assert any(line.startswith(f"| {v['variant']} | {v['train pairs']} |") for line in tables.splitlines())
    for r in verdicts.rankings(summary("seeds")):
        assert any(r["a"] in line and r["metric"] in line and line.endswith(f"| {r['verdict']} |")
                   for line in tables.splitlines())
    assert "judge gain" in tables


def test_report_sets_the_original_settings_beside_this_profile(pdf_text):
    path = ROOT / "results" / "full" / "reinforce_ema.json"
    if not path.exists():
        pytest.skip("results/full/reinforce_ema.json is made by make rerun (python -m alignlib reinforce --profile full)")
    orig = json.loads(path.read_text())["metrics"]
    lo, hi = orig["reward_delta_ci95"]
    assert f"[{fmt(lo)}, {fmt(hi)}]" in pdf_text
