"""Interrupted training resumes exactly: kill a run (SIGKILL) after k steps, run it again,
and compare with an uninterrupted run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignlib import checkpoint

JOB = Path(__file__).resolve().parent / "resume_job.py"


def job(kind, ckpt, out, kill_at=None):
    args = [sys.executable, str(JOB), kind, str(ckpt), str(out)] + ([str(kill_at)] if kill_at else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


# REINFORCE: killed under two processes in tests/test_distributed.py, interrupted in process in tests/test_loops.py
@pytest.mark.parametrize("kind, kill_at", [("rm", 4)])
def test_killed_run_resumes_to_the_same_result(tmp_path, kind, kill_at):
    whole = job(kind, tmp_path / "a", tmp_path / "a.json")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = job(kind, tmp_path / "b", tmp_path / "b.json", kill_at=kill_at)
    assert killed.returncode == -9 and not (tmp_path / "b.json").exists()
    assert checkpoint.latest(tmp_path / "b").name == f"step-{kill_at:07d}"
    resumed = job(kind, tmp_path / "b", tmp_path / "b.json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout
    a, b = json.loads((tmp_path / "a.json").read_text()), json.loads((tmp_path / "b.json").read_text())
    assert a == b
    assert len(a["train/loss"]) >= 6


def test_changed_config_refuses_to_resume(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters())
    checkpoint.save(tmp_path, 3, {"lr": 1e-4, "batch_size": 8}, model, opt, {})
    with pytest.raises(checkpoint.CheckpointMismatch, match="lr differ"):
        checkpoint.load(tmp_path, {"lr": 2e-4, "batch_size": 8}, model, opt)


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters())
    checkpoint.save(tmp_path, 2, {"a": 1}, model, opt, {"x": 1})
    # a crash while writing step 4: the temporary folder exists, LATEST still names step 2
    (tmp_path / ".tmp-step-0000004-123").mkdir()
    (tmp_path / ".tmp-step-0000004-123" / "weights.pt").write_bytes(b"partial")
    step, extra = checkpoint.load(tmp_path, {"a": 1}, model, opt)
    assert step == 2 and extra == {"x": 1}
