"""`make gpu-check` (alignlib/gpu_check.py) without a GPU: its refusal, its dry run's record, its time budget, a
failing unit test, and the scalar reward model it times REINFORCE against."""

import json
import time

import pytest
import torch

from alignlib import gpu_check, records


@pytest.fixture
def no_results_here(tmp_path, monkeypatch):
    """The output root moved to a temporary folder: a dry run must write only where --out says."""
    root = tmp_path / "output_root"
    monkeypatch.setenv(records.RESULTS_ENV, str(root))
    monkeypatch.delenv("ALIGNLIB_AMP", raising=False)  # the check drops it; the test's process keeps none
    yield
    assert not list(root.rglob("gpu_check.json"))


def test_without_cuda_it_refuses_with_exit_code_2_and_says_what_to_do(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and "NVIDIA GPU" in err and "--dry-run" in err
    assert not out.exists()


def test_the_dry_run_records_every_part(tmp_path, no_results_here):
    out = tmp_path / "gpu_check.json"
    start = time.perf_counter()
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 0
    elapsed = time.perf_counter() - start
    record = json.loads(out.read_text())
    for field in (*records.REQUIRED, "hardware", "code_version"):
        assert field in record
    assert record["name"] == "gpu_check" and record["config"]["dry_run"] is True and record["precision"] == "fp16"
    assert record["parts"] == {"unit_tests": "done", "reward_model": "done", "reinforce": "done"}
    assert record["notes"] == []
    m, scale = record["metrics"], gpu_check.dry_run_scale()
    assert set(gpu_check.METRICS) <= set(m)
    assert m["tests_passed"] > 0 and m["tests_failed"] == 0 and m["tests_exit_code"] == 0
    assert m["rm_steps"] == scale.rm.max_steps == 2 and 0 <= m["rm_skipped_steps"] <= m["rm_steps"]
    assert m["rm_pairs_per_s"] > 0 and m["rm_peak_memory_mb"] > 0
    assert m["reinforce_iterations"] == scale.reinforce.iterations == 2
    for key in ("reinforce_first_iter_s", "reinforce_sec_per_iter", "reinforce_generate_s", "reinforce_score_s",
                "reinforce_backward_s", "reinforce_peak_memory_mb"):
        assert m[key] > 0, key
    parts = m["reinforce_generate_s"] + m["reinforce_score_s"] + m["reinforce_backward_s"]
    assert parts == pytest.approx(m["reinforce_sec_per_iter"], rel=0.01)  # the split covers the iteration
    assert 0 < m["total_s"] <= elapsed
    assert record["reinforce_against"]["reward_model"] == "tiny random scalar RM (dry run)"
    assert record["part_precision"]["reward_model"]["precision"] == "fp16"


def test_a_failing_unit_test_fails_the_check_after_the_other_parts_ran(tmp_path, no_results_here, monkeypatch):
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_passes():\n    pass\n\n\ndef test_fails():\n    assert False\n")
    monkeypatch.setattr(gpu_check, "DRY_RUN_TEST_FILES", (str(failing),))
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out)]) == 1
    record = json.loads(out.read_text())
    assert record["parts"] == {"unit_tests": "failed", "reward_model": "done", "reinforce": "done"}
    assert record["metrics"]["tests_passed"] == 1 and record["metrics"]["tests_failed"] == 1
    assert record["metrics"]["reinforce_iterations"] == 2
    assert any("unit_tests: failed" in note for note in record["notes"])


def test_parts_that_do_not_fit_the_budget_are_skipped_with_a_note(tmp_path, no_results_here):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--dry-run", "--out", str(out), "--budget", "0"]) == 1
    record = json.loads(out.read_text())
    assert record["parts"] == {"unit_tests": "skipped", "reward_model": "skipped", "reinforce": "skipped"}
    assert len(record["notes"]) == 3 and all("budget" in note for note in record["notes"])
    assert record["metrics"]["rm_steps"] is None and record["metrics"]["reinforce_iterations"] is None


def test_the_unit_test_selection_exists():
    for path in gpu_check.TEST_FILES:
        assert (records.ROOT / path).exists(), path


def test_junit_counts(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="7" failures="1" errors="1" '
                      'skipped="2"></testsuite></testsuites>')
    assert gpu_check.junit_counts(report) == {"tests_passed": 3, "tests_failed": 1, "tests_errors": 1,
                                              "tests_skipped": 2}


def test_reinforce_is_timed_against_the_published_scalar_rm_else_a_fresh_one(monkeypatch, tmp_path):
    """The real models' loader (what a GPU run uses), on the CPU: the committed full-profile adapter loads; where
    it does not, a freshly initialised scalar RM is used, and the description says why."""
    real = gpu_check.RealModels(gpu_check.full_scale())
    model, described = real.scalar_reward_model("offline:hh-rlhf-helpful-test")
    assert described == "published adapter results/full/adapters/rm_scalar" and model.config.num_labels == 1
    monkeypatch.setattr(gpu_check, "PUBLISHED_SCALAR_RM", tmp_path / "no_adapter")
    model, described = real.scalar_reward_model("offline:hh-rlhf-helpful-test")
    assert described.startswith("freshly initialised scalar RM") and "adapter_config.json missing" in described
    assert model.config.num_labels == 1
