"""The generated sections of the README and docs/ (report/sections.py), checked on the data they show: numbers,
rows and verdicts from hand-made records, not the exact Markdown."""

import json

import pytest

import report
from report import sections

AVX2, XEON = "AMD EPYC (x86_64, AVX2), 2 CPU cores, torch 2.13.0+cpu", "Intel(R) Xeon(R) Processor (x86_64), 2 CPU cores"


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    return tmp_path


def write(root, name, obj):
    path = root / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def rm_record(acc, hardware=AVX2, precision="none"):
    return {"hardware": hardware, "precision": precision, "code_version": "abc123", "model_source": "gguf-q4_1",
            "data_source": "offline:hh", "wall_time_s": 3600.0, "peak_memory_mb": 2048.0,
            "metrics": {"val_accuracy": acc, "val_accuracy_ci95": [acc - 0.05, acc + 0.05], "val_loss": 0.65,
                        "train_pairs": 1800, "train_tokens_per_s": 91.4, "n_pairs": 373}}


def policy_record(delta, hardware=XEON, precision="bf16"):
    m = {"reward_sft_mean": 1.0, "reward_rl_mean": 1.0 + delta, "reward_delta_mean": delta,
         "reward_delta_ci95": [delta - 0.1, delta + 0.1], "win_rate": 0.641, "kl_to_sft": 5.91, "distinct2_sft": 0.7,
         "distinct2_rl": 0.75, "length_sft": 76.0, "length_rl": 78.0, "sec_per_iter": 75.3, "n_eval_prompts": 128}
    return {**rm_record(0.0, hardware, precision), "metrics": m}


def test_splice_replaces_only_what_stands_between_the_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- a:start -->\nold\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nkept\n<!-- b:end -->\n")
    sections.splice(page, "a", "new 1\nnew 2")
    sections.splice(page, "a", "new 1\nnew 2")  # idempotent
    assert page.read_text() == ("intro\n<!-- a:start -->\nnew 1\nnew 2\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nkept"
                                "\n<!-- b:end -->\n")
    with pytest.raises(SystemExit, match="c:start"):
        sections.splice(page, "c", "x")


def test_every_section_has_its_markers_in_its_file():
    for name, (file, _) in sections.SECTIONS.items():  # make report rewrites each; a lost marker stops it
        text = (report.ROOT / file).read_text()
        assert text.count(f"<!-- {name}:start -->") == 1 and text.count(f"<!-- {name}:end -->") == 1, (file, name)


def test_results_show_each_records_numbers_machine_precision_and_code(root):
    write(root, "cpu/rm_scalar", rm_record(0.609))
    write(root, "cpu/reinforce_ema", policy_record(0.238))
    write(root, "cpu/data", {"metrics": {"n_train": 5403, "n_development": 400, "n_validation": 373, "n_dropped": 64}})
    text = sections.results("cpu")
    assert "rm_scalar" in text and "0.609 [0.559, 0.659]" in text and "1800" in text
    assert "reinforce_ema" in text and "+0.238 [0.138, 0.338]" in text and "64.1%" in text
    assert "rm_prob" not in text  # a record that does not exist is left out
    assert "6240 pairs read" in text and "64 malformed" in text
    machines = next(line for line in text.splitlines() if line.startswith("Machines"))
    assert "AMD EPYC (x86_64, AVX2), 2 CPU cores: `rm_scalar`" in machines and "torch" not in machines
    assert "Intel(R) Xeon(R) Processor (x86_64), 2 CPU cores: `reinforce_ema`" in machines
    precision = next(line for line in text.splitlines() if line.startswith("Precision"))
    assert "float32: `rm_scalar`" in precision and "bfloat16 autocast: `reinforce_ema`" in precision
    write(root, "cpu/reinforce_ema", policy_record(0.238, AVX2, "none"))
    text = sections.results("cpu")
    assert "float32 in every record" in text and "abc123: 2 records" in text
    assert "Every row is one training run" in text  # no seeds.json yet


def test_results_count_the_rankings_that_hold_over_seeds(root):
    write(root, "cpu/rm_scalar", rm_record(0.609))
    write(root, "cpu/seeds", {"seeds": [0, 1, 2], "rankings": [
        {"a": "reinforce_rloo", "b": "reinforce_ema", "metric": "win_rate", "diff": 0.0, "ci95": [-1, 1], "holds": False},
        {"a": "reinforce_prob_sampled", "b": "reinforce_prob_expected", "metric": "reward_delta_mean", "diff": -0.3,
         "ci95": [-0.5, -0.1], "holds": True}]})
    text = sections.results("cpu")
    assert "1 of 2 rankings hold" in text and "`reinforce_prob_sampled` − `reinforce_prob_expected`" in text
    assert "reinforce_rloo" not in text.split("rankings hold")[1].split(";")[0]  # only the holding one is named


def test_costs_give_make_test_and_make_report_measured_and_never_a_gpu_figure_that_is_not(root):
    write(root, "timings", {"make_test_fresh_clone_s": 672.0, "setup_s": 60.0, "commit": "f00", "measured": "2026-12-06",
                            "machine": "AMD EPYC, 2 CPU cores", "pytest_summaries": [
                                "=== 275 passed in 180.00s ===", "=== 65 passed in 198.00s ===", "=== 11 passed in 6.00s ==="]})
    for name in sections.needed("cpu"):
        write(root, f"cpu/{name}", {"wall_time_s": 3600.0, "peak_memory_mb": 1024.0 * (2 if name == "rm_prob" else 1),
                                    "hardware": XEON if name == "data" else AVX2})
    text = sections.costs("cpu")
    test_row = next(line for line in text.splitlines() if "`make test`" in line)
    assert "11.2 min" in test_row and "AMD EPYC, 2 CPU cores" in test_row and "f00" in test_row
    assert "setup 1.0" in test_row and "unit tests 3.0" in test_row and "studies at smoke 3.8 min" in test_row  # 672 - 60 - 384 s
    report_row = next(line for line in text.splitlines() if "`make report`" in line)
    n = len(sections.needed("cpu"))
    assert f"{n}.0 h" in report_row and "peak memory 2.0 GB" in report_row  # n records of an hour each
    assert "AMD EPYC (x86_64, AVX2), 2 CPU cores" in report_row and "Intel(R) Xeon(R)" in report_row
    assert test_row.endswith("| not measured yet |")
    assert f"not measured yet (0 of {len(sections.needed('full'))} runs recorded in `results/full/`)" in report_row
    (root / "results" / "timings.json").unlink()
    assert "not measured yet" in sections.test_cost()
    assert "not measured yet (`python -m report.learner_path`)" in sections.learner_cost()
    write(root, "learner_path", {"seconds": {"01_data": 102.0, "03_reinforce": 183.0}, "profile": "cpu", "commit": "f00",
                                 "measured": "2026-12-06", "machine": "AMD EPYC, 2 CPU cores"})
    learner_row = next(line for line in sections.costs("cpu").splitlines() if "as a learner runs them" in line)
    assert "**3.0 min** at most per notebook (01 1.7, 03 3.0 min) on AMD EPYC, 2 CPU cores" in learner_row


def test_studies_show_the_ablation_the_rankings_verdicts_and_the_judges_course(root):
    variants = [{"variant": "baseline", "train pairs": 1800, "LoRA on": "q_proj, v_proj", "epochs": 1, "dev pairs": 400,
                 "dev accuracy": 0.608, "dev accuracy 95% CI": [0.56, 0.655], "vs baseline": None,
                 "vs baseline 95% CI": None, "peak memory GB": 12.7},
                {"variant": "all_linear", "train pairs": 1800, "LoRA on": ", ".join(["x"] * 7), "epochs": 1,
                 "dev pairs": 400, "dev accuracy": 0.625, "dev accuracy 95% CI": [0.578, 0.672], "vs baseline": 0.018,
                 "vs baseline 95% CI": [-0.02, 0.052], "peak memory GB": 21.3}]
    write(root, "cpu/rm_ablation", {"variants": variants, "missing": [], "chosen": "baseline", "rule": "the rule"})
    for v in variants:
        write(root, f"cpu/rm_dev/{v['variant']}", {"wall_time_s": 4800.0, "hardware": AVX2})
    write(root, "cpu/seeds", {"seeds": [0, 1, 2], "configs": {"reinforce_ema": {
        "per_seed": {"reward_delta_mean": [0.238, 0.25, 0.353]},
        "across_seeds": {"reward_delta_mean": {"mean": 0.28, "ci95": [0.124, 0.437]}}}}, "rankings": [
        {"a": "reinforce_rloo", "b": "reinforce_ema", "metric": "win_rate", "diff": -0.018, "ci95": [-0.1, 0.09],
         "holds": False}]})
    points = [{"iteration": i, "kl_to_sft": k, "proxy_gain_sd": p, "judge_gain_sd": j, "judge_gain_ci95": ci}
              for i, k, p, j, ci in ((0, 0.0, 0.0, 0.0, [0, 0]), (20, 5.0, 1.0, 0.9, [0.3, 0.5]),
                                     (40, 9.0, 1.4, 0.1, [0.0, 0.2]))]
    write(root, "cpu/overoptimization", {"policies": {"reinforce_ema": {"points": points, "complete": False}}})
    text = sections.studies("cpu")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "0.625 [0.578, 0.672]" in rows["all_linear"] and "all linear layers" in rows["all_linear"]
    assert "+0.018 [-0.020, 0.052]" in rows["all_linear"] and "80 min" in rows["all_linear"]
    assert "Chosen: **baseline**" in text
    assert "+0.280 [0.124, 0.437]" in rows["reinforce_ema"]
    assert rows["reinforce_rloo"].endswith("| withdrawn |")
    course = next(line for line in text.splitlines() if line.startswith("- reinforce_ema"))
    assert "iteration 40" in course and "KL 9.0" in course and "falls" in course and "not complete" in course


def test_full_profile_section_names_the_runs_still_to_do_with_the_command_line(root):
    assert "No run of the `full` profile" in sections.full("cpu")
    write(root, "full/rm_scalar", {**rm_record(0.611, "NVIDIA H200, torch 2.11"), "shared_device": True,
                                   "config": {"rm": {"epochs": 1}}})
    text = sections.full("cpu")
    assert "0.611 [0.561, 0.661]" in text and "NVIDIA H200" in text and "GPU shared" in text
    assert "`python -m alignlib rm --labels 10 --publish --profile full`" in text
    assert "`python -m alignlib reinforce --profile full`" in text


def test_mutants_line_gives_the_score_and_each_module(root):
    assert "has not run yet" in sections.mutants("cpu")
    write(root, "mutants", {"code_version": "e86f9ca", "created": "2026-11-26 10:00:00", "complete": False,
                            "score": 0.921, "mutants": 100, "not_checked": 10, "killed": 80, "timeout": 2,
                            "survived": 8, "no_tests": 0,
                            "modules": {"losses": {"score": 0.99, "mutants": 60},
                                        "rollout": {"score": 0.88, "mutants": 40, "not checked": 10}}})
    text = sections.mutants("cpu")
    assert "92.1%" in text and "90 checked mutants" in text and "10 mutants not checked" in text
    assert "`losses` 99%" in text and "`rollout` 88% (30 of 40 checked)" in text
