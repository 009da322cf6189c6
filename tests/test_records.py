import json
import math
import re

import pytest
import torch

from alignlib import records, runs


@pytest.fixture
def records_in(tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNLIB_AMP", raising=False)
    monkeypatch.setattr(records, "results_dir", lambda profile: tmp_path)
    return tmp_path


def write(name, metrics):
    return records.write_record(name, "smoke", model_source="tiny", data_source="test", seed=0, wall_time_s=1.23,
                                config={"lr": 1e-3}, metrics=metrics, amp="none")


def test_record_carries_the_common_fields_and_the_code_version(records_in):
    path = write("run", {"accuracy": 0.5})
    record = json.loads(path.read_text())
    assert set(records.REQUIRED) <= set(record)
    assert record["metrics"] == {"accuracy": 0.5} and record["wall_time_s"] == 1.2
    # a 12-digit commit (maybe marked dirty) in a git checkout; "unknown" in a copy without .git (a zip download)
    in_git = (records.ROOT / ".git").exists()
    assert re.fullmatch(r"[0-9a-f]{12}(\+dirty)?" if in_git else "unknown", record["code_version"])
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu") and record["precision"] == "none"


def test_record_with_a_non_finite_number_is_refused(records_in):
    with pytest.raises(ValueError, match="non-finite number"):
        write("bad", {"loss": math.nan})
    assert not (records_in / "bad.json").exists()


def test_code_version_outside_a_git_checkout_is_unknown_unless_the_copy_says_which_commit_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "ROOT", tmp_path)
    monkeypatch.delenv(records.CODE_VERSION_ENV, raising=False)
    assert records.code_version() == "unknown"
    monkeypatch.setenv(records.CODE_VERSION_ENV, "79a34b6a67d1")  # e.g. the files sent to a GPU machine
    assert records.code_version() == "79a34b6a67d1"


def test_code_version_is_the_last_commit_that_changed_the_code(tmp_path, monkeypatch):
    """A commit of notebooks or results leaves the version alone; an uncommitted code change marks it dirty."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "alignlib").mkdir()
    (tmp_path / "alignlib" / "loop.py").write_text("x = 1\n")
    git("add", "."), git("commit", "-qm", "code")
    code_commit = git("rev-parse", "HEAD")
    (tmp_path / "notes.md").write_text("results\n")
    git("add", "."), git("commit", "-qm", "results only")
    monkeypatch.setattr(records, "ROOT", tmp_path)
    assert records.code_version() == code_commit[:12] != git("rev-parse", "HEAD")[:12]
    (tmp_path / "alignlib" / "plots.py").write_text("colour = 'C0'\n")  # presentation only: no run computes with it
    git("add", "."), git("commit", "-qm", "a figure's colour")
    assert records.code_version() == code_commit[:12]
    (tmp_path / "alignlib" / "plots.py").write_text("colour = 'C1'\n")
    assert records.code_version() == code_commit[:12]
    (tmp_path / "alignlib" / "loop.py").write_text("x = 2\n")
    assert records.code_version() == code_commit[:12] + "+dirty"


def test_a_record_carries_the_code_its_process_loaded_not_the_checkout_at_the_end(tmp_path, monkeypatch):
    """A run that outlives a commit (hours on a CPU) records the version of the code it started with."""
    versions = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(records, "code_version", lambda: next(versions))
    monkeypatch.setattr(records, "_LOADED", {})
    monkeypatch.setattr(records, "results_dir", lambda profile: tmp_path)
    runs.start(0)  # the run starts: "aaa..." is the checkout's code now
    path = write("long_run", {"accuracy": 0.5})  # the checkout has moved on to "bbb..." meanwhile
    assert json.loads(path.read_text())["code_version"] == "aaaaaaaaaaaa"


def test_a_published_record_says_who_made_it(capsys):
    record = records.published_record("rm_scalar")
    shown = capsys.readouterr().out
    assert "PUBLISHED 'cpu' record, not a run of this machine" in shown
    assert record["code_version"] in shown and record["created"][:10] in shown
    assert f"{record['wall_time_s'] / 60:.0f} min" in shown


def test_cost_note_gives_the_measured_cost_or_says_it_was_not_measured():
    note = records.cost_note("rm_scalar")  # published at cpu, and measured on a GPU at full
    assert "at 'cpu' on" in note and "at 'full' on NVIDIA" in note
    assert "not measured at 'full' (a GPU)" in records.cost_note("reinforce_ema")
