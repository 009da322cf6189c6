"""Both loops under `accelerate launch` with two CPU processes (gloo): the same global batch split
over two processes gives the one-process run's losses, metrics and final weights, also when the
two-process run was killed and resumed."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignlib import checkpoint, precision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distributed_job  # noqa: E402

JOB = Path(distributed_job.__file__)
ACCELERATE = Path(sys.executable).parent / "accelerate"


# float32 in both runs, whatever the machine or $ALIGNLIB_AMP: the test compares a split batch with a whole one, and
# bf16 autocast (the smoke profile's "auto" on a CPU with AMX) rounds the two differently by 0.3% in the first step
FLOAT32 = {precision.AMP_ENV: "none"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out_dir: Path, *args) -> subprocess.CompletedProcess:
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           str(JOB), str(out_dir), *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **FLOAT32}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def assert_same_run(one: tuple, two: tuple, after_updates: float = 0.0) -> None:
    """The first step starts from the same weights in both runs, so its metrics agree to float rounding.
    `after_updates` > 0 allows later steps' metrics to drift by that share of their scale, and the final weights
    by 3% of their norm: AdamW moves a parameter whose gradient is near zero by about ±lr whichever sign
    rounding gives that gradient (its step is m/sqrt(v)), so where the kernels round a split batch differently from a whole one (AVX512
    CPUs), full fine-tuning drifts by up to 1.3% of a metric's scale (the KL to SFT, a small difference of
    large log-probabilities; the losses 0.1%) and 1% of the weights' norm (measured on AMD EPYC with AVX512;
    bitwise equal on AVX2). A missing gradient all-reduce or a wrong data split already shows in the first step."""
    (h1, w1), (h2, w2) = one, two
    assert h1.keys() == h2.keys()
    for key in h1:
        if key.startswith("time/"):
            continue
        nan = lambda xs: [float("nan") if x is None else x for x in xs]  # noqa: E731  (not measured)
        a, b = nan(h1[key]), nan(h2[key])
        assert a[:1] == pytest.approx(b[:1], rel=1e-4, abs=2e-5, nan_ok=True), f"{key}, first step"
        scale = max((abs(x) for x in a if x == x), default=0.0)
        assert a[1:] == pytest.approx(b[1:], rel=1e-4, abs=2e-5 + after_updates * scale, nan_ok=True), key
    assert w1.keys() == w2.keys()
    for name in w1:
        if after_updates:
            drift = float((w1[name].double() - w2[name].double()).norm() / w1[name].double().norm().clamp_min(1e-12))
            assert drift <= 3e-2, f"{name}: weights differ by {drift:.2e} of their norm"
        else:
            torch.testing.assert_close(w1[name], w2[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(precision.AMP_ENV, "none")
        return distributed_job.main(tmp_path_factory.mktemp("one"))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two launches (each pays for starting the processes): the first is killed (SIGKILL of the main
    process right after the RLOO run's second checkpoint), the second resumes it and finishes."""
    out = tmp_path_factory.mktemp("two")
    killed = launch(out, 2)
    assert killed.returncode != 0 and not (out / "result.pt").exists()
    assert checkpoint.latest(out / "rl").name == "step-0000002"
    resumed = launch(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return torch.load(out / "result.pt", weights_only=False), resumed.stdout


@pytest.mark.parametrize("run", ["rm", "ema_kl", "rloo"])
def test_two_processes_equal_one(one_process, two_processes, run):
    """rloo: the killed and resumed two-process run, against one uninterrupted process."""
    two, stdout = two_processes
    assert two["processes"] == 2 and one_process["processes"] == 1
    assert_same_run(one_process[run], two[run], after_updates=0.0 if run == "rm" else 5e-2)  # LoRA RM: bitwise
    history = one_process[run][0]
    if run == "rm":
        assert history["train/tokens"][0] > 0 and len(history["step"]) == 4  # 16 pairs, 4 per step
    else:  # training moved the policy, and the KL to SFT was measured (ema_kl: at every iteration)
        assert len(history["step"]) == 4 and history["optim/grad_norm"][0] > 0
        assert all(kl is not None for kl in history["kl/to_sft"]) == (run == "ema_kl")
    if run == "rloo":
        assert "resuming REINFORCE at iteration 2" in stdout
