"""The PDF report builds from the smoke records that `make test` writes (nbval step) and shows
their numbers. Run after the notebooks: `make test` calls it last."""

import json
import math
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("ALIGNLIB_PROFILE", "smoke")
sys.path.insert(0, str(ROOT / "report"))

import build  # noqa: E402


def fmt(x, d=3):
    """x as the report prints it: typst's calc.round rounds x * 10^d half away from zero (0.6725 -> 0.673,
    where Python's format gives 0.672 from the binary 0.67249...)."""
    y = x * 10**d
    return f"{math.copysign(math.floor(abs(y) + 0.5), y) / 10**d:.{d}f}"


@pytest.fixture(scope="module")
def pdf_text(tmp_path_factory):
    from pypdf import PdfReader

    problems = build.missing_records(PROFILE)
    assert not problems, "run the notebooks at the smoke profile first (make test does):\n" + "\n".join(problems)
    out = build.build(PROFILE, tmp_path_factory.mktemp("report") / "report.pdf")
    reader = PdfReader(out)
    assert len(reader.pages) >= 3
    return " ".join(page.extract_text() for page in reader.pages).replace("\n", " ")


def record(name):
    return json.loads((ROOT / "results" / PROFILE / f"{name}.json").read_text())


def test_report_shows_the_numbers_of_its_records(pdf_text):
    data, rm, ema = record("data"), record("rm_scalar"), record("reinforce_ema")
    assert f"{data['metrics']['n_train']} training pairs" in pdf_text
    assert fmt(rm["metrics"]["val_accuracy"]) in pdf_text
    lo, hi = rm["metrics"]["val_accuracy_ci95"]
    assert f"[{fmt(lo)}, {fmt(hi)}]" in pdf_text
    assert fmt(ema["metrics"]["distinct2_rl"]) in pdf_text
    assert f"Profile {PROFILE}" in pdf_text
    used = {"none": "float32", "fp16": "fp16 autocast with loss scaling"}.get(ema["precision"], f"{ema['precision']} autocast")
    assert f"computed in {used}" in pdf_text  # the precision the record states, not a fixed claim


def test_report_shows_level_2_and_the_cross_judging(pdf_text):
    rm_prob, sampled, comp = record("rm_prob"), record("reinforce_prob_sampled"), record("comparison")
    lo, hi = rm_prob["metrics"]["val_accuracy_ci95"]
    assert f"{fmt(rm_prob['metrics']['val_accuracy'])} [{fmt(lo)}, {fmt(hi)}]" in pdf_text
    assert fmt(sampled["metrics"]["advantage_var"]) in pdf_text
    win = comp["metrics"]["reinforce_prob_expected/scalar/win_rate"]
    assert f"{100 * win:.1f}%" in pdf_text
    assert comp["examples"][0]["prompt"] in pdf_text


def test_report_shows_the_speed_records(pdf_text):
    bench = json.loads((ROOT / "results" / "bench.json").read_text())
    prof = json.loads((ROOT / "results" / "speed_profile.json").read_text())
    assert f"{bench['rm_pairs_per_s_ratio_vs_trl']:.2f}×" in pdf_text
    old = json.loads((ROOT / "results" / "bench_native_bf16_cpu.json").read_text())
    assert f"{old['rm_pairs_per_s_ratio_vs_trl']:.2f}×" in pdf_text  # the machine that made the records, beside
    adamw = prof["policy_optimisations"]["adamw_step_s"]
    loop, fused = adamw["for-loop (torch default on CPU)"]["median"], adamw["fused"]["median"]
    assert f"{loop:.2f} → {fused:.2f} s" in pdf_text
    kv = prof["policy_optimisations"]["kv_cache_s"]
    assert f"{kv['dynamic']['median']:.2f} s with the dynamic cache" in pdf_text


def test_missing_bench_record_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "ROOT", tmp_path)
    (tmp_path / "results" / PROFILE).mkdir(parents=True)
    problems = build.missing_records(PROFILE)
    for name in ("bench.json", "speed_profile.json"):
        assert f"results/{name} is missing: run `make bench`" in problems


def test_a_policy_whose_reward_model_was_trained_again_is_named_stale(tmp_path, monkeypatch):
    import hashlib

    def write(root, name, obj):
        path = root / "results" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))

    monkeypatch.setattr(build, "ROOT", tmp_path)
    weights = tmp_path / "results/cpu/adapters/rm_scalar/adapter_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"the reward model notebook 03 optimised")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    for name, sha in (("reinforce_ema", digest), ("reinforce_rloo", digest), ("reinforce_ema_kl", None)):
        write(tmp_path, f"cpu/{name}.json", {"config": {"reward_model": "results/cpu/adapters/rm_scalar"},
                                             **({"reward_model_sha256": sha} if sha else {})})
    write(tmp_path, "cpu/rm_scalar.json", {"created": "2026-11-25 01:00:00"})
    for name in ("reinforce_ema", "reinforce_rloo", "reinforce_ema_kl"):
        record = json.loads((tmp_path / f"results/cpu/{name}.json").read_text())
        write(tmp_path, f"cpu/{name}.json", {**record, "created": "2026-11-25 02:00:00"})
    assert build.stale_policies("cpu") == []
    weights.write_bytes(b"notebook 02 ran again")
    assert build.stale_policies("cpu") == ["reinforce_ema", "reinforce_rloo"]  # by their digests
    write(tmp_path, "cpu/rm_scalar.json", {"created": "2026-12-02 01:00:00"})  # an older record: by the dates
    assert build.stale_policies("cpu") == ["reinforce_ema", "reinforce_rloo", "reinforce_ema_kl"]


def test_missing_record_names_the_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "ROOT", tmp_path)
    (tmp_path / "results" / PROFILE).mkdir(parents=True)
    with pytest.raises(SystemExit, match="run notebooks/02_scalar_reward_model.ipynb"):
        build.build(PROFILE, tmp_path / "x.pdf")


def summary(name):
    path = ROOT / "results" / PROFILE / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} is missing: `make test` writes it with `python -m alignlib.studies` at the smoke profile")
    return json.loads(path.read_text())


def test_report_shows_the_ablation_table_and_its_choice(pdf_text):
    ablation = summary("rm_ablation")
    assert "Tuning on development pairs" in pdf_text
    for v in ablation["variants"]:
        lo, hi = v["dev accuracy 95% CI"]
        assert f"{fmt(v['dev accuracy'])} [{fmt(lo)}, {fmt(hi)}]" in pdf_text
    if ablation.get("chosen"):  # every variant has run (always at smoke: make test runs them all)
        assert f"Chosen: {ablation['chosen']}, by a rule" in pdf_text


def test_report_shows_the_seeds_and_withdraws_what_they_do_not_rank(pdf_text):
    seeds = summary("seeds")
    assert "Seeds: what holds across training runs" in pdf_text
    ema = seeds["configs"]["reinforce_ema"]["across_seeds"]["reward_delta_mean"]
    lo, hi = ema["ci95"]
    sign = "+" if ema["mean"] >= 0 else "−"
    assert f"{sign}{fmt(abs(ema['mean']))} [{fmt(lo)}, {fmt(hi)}]".replace("-", "−") in pdf_text.replace("-", "−")
    verdicts = pdf_text.count("not ranked (withdrawn)")
    assert verdicts == sum(not r["holds"] for r in seeds["rankings"])
    assert "no ranking between configurations is claimed" not in pdf_text


def test_report_shows_the_overoptimisation_against_the_held_out_judge(pdf_text):
    overopt = summary("overoptimization")
    assert "Over-optimisation: a judge the policy never saw" in pdf_text
    assert "Proxy and judge reward gain over SFT" in pdf_text  # the figure's caption
    last = overopt["policies"]["reinforce_ema"]["points"][-1]
    assert f"after {last['iteration']} iterations" in pdf_text
    # the judge "falls" only where its intervals at its peak and at the end do not overlap, never on one lower point
    text, verdicts = " ".join(pdf_text.split()), []  # a phrase may span a line break
    for run in overopt["policies"].values():
        points = run["points"]
        if len(points) < 2:
            continue
        peak = max(points, key=lambda p: p["judge_gain_sd"])
        if peak is points[-1]:
            verdicts.append("is still rising at the end")
        elif points[-1]["judge_gain_ci95"][1] < peak["judge_gain_ci95"][0]:
            verdicts.append("falls after it beyond noise")
        else:
            verdicts.append("the later points stay within noise of it")
    for verdict in set(verdicts):
        assert text.count(verdict) == verdicts.count(verdict), verdict
    falls = "falls after it beyond noise" in verdicts
    assert ("the gain under a judge the policy never saw does not fall" in text) == (bool(verdicts) and not falls)
    # at matched KL: each penalised point against the unpenalised point nearest in KL, counted as the report does
    free = overopt["policies"].get("reinforce_ema", {"points": []})["points"][1:]
    penalised = overopt["policies"].get("reinforce_ema_kl", {"points": []})["points"][1:]
    if free and penalised:
        pairs = [(p, min(free, key=lambda q: abs(q["kl_to_sft"] - p["kl_to_sft"]))) for p in penalised]
        higher = sum(p["judge_gain_sd"] > q["judge_gain_sd"] for p, q in pairs)
        above = sum(p["judge_gain_ci95"][0] > q["judge_gain_ci95"][1] for p, q in pairs)
        below = sum(p["judge_gain_ci95"][1] < q["judge_gain_ci95"][0] for p, q in pairs)
        assert (
            f"higher with the penalty at {higher} of {len(pairs)}, higher beyond noise (the two intervals do not "
            f"overlap) at {above} and lower beyond noise at {below}"
        ) in text
        strong = 2 * above >= len(pairs) and below == 0  # "more reward" only where most points show it beyond noise
        assert ("reaches a given distance from SFT with more reward" in text) == strong
        assert ("a hint, beyond noise at only" in text) == (0 < above and not strong and below == 0)
    else:
        assert "At matched KL." not in text
    assert "else if" not in text  # typst code that leaked into the text (a line break before `else`)


def test_the_readme_keeps_every_generated_section_and_shows_the_studies():
    import readme_table

    readme = (ROOT / "README.md").read_text()
    for name in readme_table.SECTIONS:  # make report rewrites each; a lost marker would stop it at the end
        assert f"<!-- {name}:start -->" in readme and f"<!-- {name}:end -->" in readme, name
    tables = readme_table.studies_tables(PROFILE)
    for v in summary("rm_ablation")["variants"]:
        assert f"| {v['variant']} | {v['train pairs']} |" in tables
    if summary("rm_ablation")["chosen"]:  # the README states the choice, as the report does
        assert f"Chosen: **{summary('rm_ablation')['chosen']}**" in tables
    for name, shown in (("seeds", "Rankings that hold over seeds:"), ("overoptimization", "judge gain")):
        if (ROOT / "results" / PROFILE / f"{name}.json").exists():  # always at smoke: make test runs the studies
            assert shown in tables, name


def test_report_and_readme_set_the_full_profiles_gpu_records_beside_their_own(pdf_text):
    import readme_table

    have = build.full_column(PROFILE)
    if not have:
        pytest.skip("results/full/ holds no scalar reward model (a GPU run)")
    rm = json.loads((ROOT / "results" / "full" / "rm_scalar.json").read_text())["metrics"]
    lo, hi = rm["val_accuracy_ci95"]
    shown = f"{fmt(rm['val_accuracy'])} [{fmt(lo)}, {fmt(hi)}]"
    assert shown in pdf_text and shown in readme_table.full_profile_runs()
    for name, command in build.FULL_COLUMN.items():
        if name not in have:  # the column says which run is still to do, and how (the one table of commands)
            assert " ".join(command.split()) in " ".join(pdf_text.split()) and name in readme_table.full_profile_runs()
