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
    assert f"{data['metrics']['n_train']} training pairs" in pdf_text
    lo, hi = rm["metrics"]["val_accuracy_ci95"]
    assert f"{fmt(rm['metrics']['val_accuracy'])} [{fmt(lo)}, {fmt(hi)}]" in pdf_text
    assert fmt(ema["metrics"]["distinct2_rl"]) in pdf_text
    assert f"Profile {PROFILE}" in pdf_text
    used = {"none": "float32", "fp16": "fp16 autocast with loss scaling"}.get(ema["precision"], f"{ema['precision']} autocast")
    assert f"computed in {used}" in pdf_text  # the precision the record states, not a fixed claim


def test_report_shows_level_2_and_the_cross_judging(pdf_text):
    rm_prob, sampled, comp = record("rm_prob"), record("reinforce_prob_sampled"), record("comparison")
    lo, hi = rm_prob["metrics"]["val_accuracy_ci95"]
    assert f"{fmt(rm_prob['metrics']['val_accuracy'])} [{fmt(lo)}, {fmt(hi)}]" in pdf_text
    assert fmt(sampled["metrics"]["advantage_var"]) in pdf_text
    assert f"{100 * comp['metrics']['reinforce_prob_expected/scalar/win_rate']:.1f}%" in pdf_text
    assert " ".join(comp["examples"][0]["prompt"].split()) in pdf_text


def test_report_states_the_headline_verdicts(pdf_text):
    found = verdicts.findings(record("rm_scalar"), record("reinforce_ema"), record("comparison"))
    assert ("The scalar reward model beats chance" in pdf_text) == found["rm_beats_chance"]
    assert ("REINFORCE raises the reward on held-out prompts" in pdf_text) == found["policy_raises_reward"]
    assert ("and the judge it never saw agrees" in pdf_text) == found["other_judge_agrees"]
    assert "else if" not in pdf_text and "else [" not in pdf_text  # typst code leaked into the text


def test_report_shows_the_speed_records(pdf_text):
    bench = json.loads((ROOT / "results" / "bench.json").read_text())
    prof = json.loads((ROOT / "results" / "speed_profile.json").read_text())
    assert f"{bench['rm_pairs_per_s_ratio_vs_trl']:.2f}×" in pdf_text
    native = ROOT / "results" / "bench_native_bf16_cpu.json"
    if native.exists():  # the machine that made the first cpu records, beside, while its records are kept
        assert f"{json.loads(native.read_text())['rm_pairs_per_s_ratio_vs_trl']:.2f}×" in pdf_text
    adamw = prof["policy_optimisations"]["adamw_step_s"]
    loop, fused = adamw["for-loop (torch default on CPU)"]["median"], adamw["fused"]["median"]
    assert f"{loop:.2f} → {fused:.2f} s" in pdf_text
    kv = prof["policy_optimisations"]["kv_cache_s"]
    assert f"{kv['dynamic']['median']:.2f} s with the dynamic cache" in pdf_text
    aims = verdicts.bench_verdicts(bench)
    assert f"policy step {aims['policy']}" in pdf_text


def test_the_report_builds_without_the_other_machines_bench_records(tmp_path, monkeypatch):
    monkeypatch.setitem(build.BENCHES, "native", ("absent.json", "absent_profile.json"))
    assert "native" not in build.values(PROFILE)["bench"] and not build.missing_records(PROFILE)
    text = pdf_of(build.build(PROFILE, tmp_path / "report.pdf"))
    assert "native bf16 machine" not in text and "bench_native_bf16_cpu.json" not in text


def test_missing_bench_record_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    problems = build.missing_records(PROFILE)
    for name in ("bench.json", "speed_profile.json"):
        assert f"results/{name} is missing: run `make bench`" in problems
    assert not any("native" in p for p in problems)  # another machine's records are never required


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


def test_report_shows_the_ablation_table_and_its_choice(pdf_text):
    ablation = summary("rm_ablation")
    assert "Tuning on development pairs" in pdf_text
    for v in ablation["variants"]:
        lo, hi = v["dev accuracy 95% CI"]
        assert f"{fmt(v['dev accuracy'])} [{fmt(lo)}, {fmt(hi)}]" in pdf_text
    best = verdicts.best_variant(ablation)
    if best:
        assert f"{best['variant']} scores highest on the development pairs" in pdf_text
    if ablation["chosen"]:  # every variant has run (always at smoke: make test runs them all)
        assert f"Chosen: {ablation['chosen']}, by a rule" in pdf_text


def test_report_shows_the_seeds_and_withdraws_what_they_do_not_rank(pdf_text):
    seeds = summary("seeds")
    assert "Seeds: what holds across training runs" in pdf_text
    ema = seeds["configs"]["reinforce_ema"]["across_seeds"]["reward_delta_mean"]
    lo, hi = ema["ci95"]
    sign = "+" if ema["mean"] >= 0 else "−"
    assert f"{sign}{fmt(abs(ema['mean']))} [{fmt(lo)}, {fmt(hi)}]".replace("-", "−") in pdf_text.replace("-", "−")
    said = [r["verdict"] for r in verdicts.rankings(seeds)]
    assert pdf_text.count("not ranked (withdrawn)") == said.count("withdrawn")
    assert "no ranking between configurations is claimed" not in pdf_text
    sampled = verdicts.sampled_reward(seeds)
    phrase = {"holds": "a ranking that holds over seeds", "holds on one": "a ranking that holds on one of the two",
              "does not hold": "not a ranking that holds"}[sampled["verdict"]]
    assert phrase in pdf_text


def test_report_shows_the_overoptimisation_against_the_held_out_judge(pdf_text):
    overopt = summary("overoptimization")
    assert "Over-optimisation: a judge the policy never saw" in pdf_text
    assert "Proxy and judge reward gain over SFT" in pdf_text  # the figure's caption
    last = overopt["policies"]["reinforce_ema"]["points"][-1]
    assert f"after {last['iteration']} iterations" in pdf_text
    said = verdicts.overoptimization(overopt)
    phrases = {"rising": "is still rising at the end", "falls": "falls after it beyond noise",
               "within noise": "the later points stay within noise of it"}
    trends = [run["trend"] for run in said["runs"].values()]
    for trend, phrase in phrases.items():
        assert pdf_text.count(phrase) == trends.count(trend), phrase
    assert ("the gain under a judge the policy never saw does not fall" in pdf_text) == (
        bool(trends) and not said["falls"])
    mk = said["matched_kl"]
    if mk:
        assert (f"higher with the penalty at {mk['higher']} of {mk['pairs']}, higher beyond noise (the two intervals "
                f"do not overlap) at {mk['above']} and lower beyond noise at {mk['below']}") in pdf_text
        assert ("reaches a given distance from SFT with more reward" in pdf_text) == (mk["verdict"] == "more reward")
    else:
        assert "At matched KL." not in pdf_text


def test_the_studies_page_shows_the_studies_summaries():
    tables = sections.studies(PROFILE)
    for v in summary("rm_ablation")["variants"]:
        assert any(line.startswith(f"| {v['variant']} | {v['train pairs']} |") for line in tables.splitlines())
    for r in verdicts.rankings(summary("seeds")):
        assert any(r["a"] in line and r["metric"] in line and line.endswith(f"| {r['verdict']} |")
                   for line in tables.splitlines())
    assert "judge gain" in tables


def test_report_and_docs_set_the_full_profiles_gpu_records_beside_their_own(pdf_text):
    have = build.full_column(PROFILE)
    if not have:
        pytest.skip("results/full/ holds no scalar reward model (a GPU run)")
    rm = json.loads((ROOT / "results" / "full" / "rm_scalar.json").read_text())["metrics"]
    lo, hi = rm["val_accuracy_ci95"]
    shown = f"{fmt(rm['val_accuracy'])} [{fmt(lo)}, {fmt(hi)}]"
    assert shown in pdf_text and shown in sections.full(PROFILE)
    for name, command in build.FULL_COLUMN.items():
        if name not in have:  # the column says which run is still to do, and how (the one table of commands)
            assert command in pdf_text and name in sections.full(PROFILE)
