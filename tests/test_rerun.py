"""The re-run of every cpu record (report/rerun.py): which steps are done, and a ledger that keeps cut-off parts."""

import json
import re
import sys

import pytest

from alignlib import records
from report import rerun


def write(root, profile, name, version, **metrics):
    path = root / "results" / profile / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "code_version": version, "metrics": metrics}))


def test_a_step_is_done_when_this_code_made_each_of_its_records(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "ROOT", tmp_path)
    monkeypatch.delenv(records.RESULTS_ENV, raising=False)
    step = rerun.Step("x", ["true"], [("cpu", "a"), ("cpu", "seeds/b"), ("full", "c")])
    assert rerun.missing(step, "v2") == ["cpu/a", "cpu/seeds/b", "full/c"]
    write(tmp_path, "cpu", "a", "v2")
    write(tmp_path, "cpu", "seeds/b", "v1")  # made by the code before: not this re-run's
    write(tmp_path, "full", "c", "v2")
    assert rerun.missing(step, "v2") == ["cpu/seeds/b"]
    parts = rerun.Step("y", ["true"], [("cpu", "overopt/p")], complete_flag=True)
    write(tmp_path, "cpu", "overopt/p", "v2", complete=False)  # written after each of its points
    assert rerun.missing(parts, "v2") == ["cpu/overopt/p"]
    write(tmp_path, "cpu", "overopt/p", "v2", complete=True)
    assert rerun.missing(parts, "v2") == []


def test_the_plan_covers_every_notebook_and_study_and_the_original_settings():
    names = [s.name for s in rerun.STEPS]
    assert names[1:6] == ["01_data", "02_scalar_reward_model", "03_reinforce", "04_probabilistic_reward_model",
                          "05_comparison"]
    assert {"seeds", "overoptimization", "original_settings"} <= set(names)
    written = {w for s in rerun.STEPS for w in s.writes}
    assert ("cpu", "seeds/reinforce_none_seed2") in written and ("full", "reinforce_ema") in written
    assert not any(name.startswith("rm_dev/") for _, name in written)  # the ablation's settings did not change


def test_a_part_cut_off_keeps_its_time_and_a_failed_one_stops_the_rerun(tmp_path, monkeypatch):
    monkeypatch.setattr(rerun, "LEDGER", tmp_path / "rerun.json")
    monkeypatch.setattr(rerun, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(rerun, "HEARTBEAT_S", 0.2)
    ledger = rerun.read_ledger("v2")
    step = rerun.Step("sleepy", [sys.executable, "-c", "import time; time.sleep(0.7); print('done')"])
    assert rerun.run_part(step, ledger) == 0
    saved = json.loads((tmp_path / "rerun.json").read_text())
    part = saved["steps"]["sleepy"]["parts"][0]
    assert part["finished"] and part["seconds"] >= 0.7 and part["machine"]
    assert "done" in (tmp_path / "logs" / "rerun_sleepy.log").read_text()
    assert rerun.read_ledger("v3") == {"code_version": "v3", "steps": {}}  # another code: a new ledger
    failing = rerun.Step("bad", [sys.executable, "-c", "raise SystemExit(3)"])
    assert rerun.run_part(failing, rerun.read_ledger("v2")) == 3


def test_the_rerun_refuses_uncommitted_code(monkeypatch):
    monkeypatch.setattr(records, "code_version", lambda: "abc+dirty")
    with pytest.raises(SystemExit, match="commit it first"):
        rerun.main([])


def test_the_rerun_refuses_a_results_dir_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.setattr(records, "code_version", lambda: "abc123")
    monkeypatch.setenv(records.RESULTS_ENV, str(tmp_path))
    with pytest.raises(SystemExit, match="unset it"):
        rerun.main(["--save-state"])
    assert not any(tmp_path.iterdir())


def checkpoint(state, step, payload):
    (state / step).mkdir(parents=True)
    (state / step / "weights.pt").write_bytes(payload)
    (state / "LATEST").write_text(step)
    (state / "train_log.jsonl").write_text(f"{step}\n")


def test_an_unfinished_reward_model_continues_on_a_fresh_clone_from_the_packed_state(tmp_path, monkeypatch):
    here, clone = tmp_path / "here", tmp_path / "clone"
    monkeypatch.setattr(records, "ROOT", here)
    monkeypatch.delenv(records.RESULTS_ENV, raising=False)
    for root in (here, clone):
        (root / "results").mkdir(parents=True)
    monkeypatch.setattr(rerun, "ROOT", here)
    monkeypatch.setattr(rerun, "CHECKPOINTS", here / "checkpoints")
    monkeypatch.setattr(rerun, "STATE", here / "results" / "rerun_state.tar")
    monkeypatch.setattr(rerun, "PACK_LIMIT_MB", 1)
    running = here / "checkpoints" / "cpu" / "overopt" / "rm_proxy_state"
    checkpoint(running, "step-0000020", b"old")
    checkpoint(running, "step-0000040", b"new")
    finished = here / "checkpoints" / "cpu" / "reinforce_ema_state"
    checkpoint(finished, "step-0000060", b"done")
    write(here, "cpu", "reinforce_ema", "v2")  # recorded by this code: nothing to continue
    write(here, "cpu", "overopt/rm_proxy", "v1")  # by the code before: this re-run's run is unfinished
    policy = here / "checkpoints" / "cpu" / "seeds" / "reinforce_ema_seed1_state"
    checkpoint(policy, "step-0000020", bytes(2 * 2**20))  # over the limit, as a policy's 1.5 GiB is
    (here / "checkpoints" / "cpu" / "sft_replies").mkdir()
    (here / "checkpoints" / "cpu" / "sft_replies" / "abc.json").write_text("[]")
    rerun.save_state("v2")

    (clone / "results" / "rerun_state.tar").write_bytes((here / "results" / "rerun_state.tar").read_bytes())
    monkeypatch.setattr(rerun, "ROOT", clone)
    monkeypatch.setattr(rerun, "STATE", clone / "results" / "rerun_state.tar")
    rerun.restore_state()
    restored = clone / running.relative_to(here)
    assert (restored / "LATEST").read_text() == "step-0000040"
    assert (restored / "step-0000040" / "weights.pt").read_bytes() == b"new"
    assert not (restored / "step-0000020").exists()  # only the newest checkpoint travels
    assert (restored / "train_log.jsonl").exists()
    assert not (clone / finished.relative_to(here)).exists()
    assert not (clone / policy.relative_to(here)).exists()  # too large to commit: it starts over
    assert (clone / "checkpoints" / "cpu" / "sft_replies" / "abc.json").read_text() == "[]"

    checkpoint(restored, "step-0000060", b"newer")  # the run went on here: a second restore leaves it alone
    rerun.restore_state()
    assert (restored / "LATEST").read_text() == "step-0000060"


def test_step_runs_only_the_named_steps_and_never_the_final_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(records, "code_version", lambda: "v2")
    monkeypatch.delenv(records.RESULTS_ENV, raising=False)
    monkeypatch.setattr(rerun, "LEDGER", tmp_path / "rerun.json")
    monkeypatch.setattr(rerun, "STATE", tmp_path / "rerun_state.tar")
    monkeypatch.setattr(rerun, "STEPS", [rerun.Step("a", ["true"], [("cpu", "a")]), rerun.Step("b", ["true"], [("cpu", "b")])])
    made = {"cpu/a"}  # a's record exists; b's is made by its run
    monkeypatch.setattr(rerun, "missing", lambda step, version: [w for w in [f"cpu/{step.name}"] if w not in made])
    ran = []
    monkeypatch.setattr(rerun, "run_part", lambda step, ledger: ran.append(step.name) or made.add(f"cpu/{step.name}") or 0)
    monkeypatch.setattr(rerun, "plan", lambda version: None)
    assert rerun.main(["--step", "b"]) == 0
    assert ran == ["b"]  # not the final report, though every step is now done
    capsys.readouterr()
    for wrong, says in ((["--step", "c"], r"invalid choice: 'c' \(choose from '?a'?, '?b'?\)"),
                        (["--step"], "expected at least one argument"),
                        (["--plan", "--save-state"], "not allowed with argument --plan")):
        with pytest.raises(SystemExit) as stopped:  # argparse's usage error, before anything runs
            rerun.main(wrong)
        assert stopped.value.code == 2 and re.search(says, capsys.readouterr().err)
    assert ran == ["b"]
