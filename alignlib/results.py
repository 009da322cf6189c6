"""Run records: one JSON object per run under results/<profile>/, read by notebooks and the report."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import resource
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
# every record carries these; records made before the precision fields existed got them from their own
# config (report/migrate_precision.py)
REQUIRED = ("profile", "model_source", "data_source", "seed", "wall_time_s", "peak_memory_mb", "config", "metrics",
            "device", "precision", "precision_requested", "precision_reason")


def seed_everything(seed: int) -> None:
    """The one seed setting of a run: Python's, NumPy's and torch's global generators.

    alignlib's own randomness uses explicit generators derived from the same seed (batch order,
    prompt order, per-iteration sampling seeds), so this guards what libraries draw globally
    (LoRA initialisation, dropout). The seed is stored in every run record.
    """
    loaded_code_version()  # the code this process runs: pinned before the run, however long it takes
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def results_dir(profile: str) -> Path:
    d = ROOT / "results" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def checkpoints_dir(profile: str) -> Path:
    d = ROOT / "checkpoints" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MB); on CUDA, the peak allocated instead."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else the machine type."""
    from .precision import cpuinfo

    return cpuinfo("model name") or platform.processor() or platform.machine()


def hardware() -> str:
    """The machine a record was made on: the GPU, or the CPU model, its cores and instruction set."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (f"{cpu_model()} ({platform.machine()}, {torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}")


CODE = ("alignlib", "benchmarks")  # the code that computes the numbers (notebooks record their settings)


CODE_VERSION_ENV = "ALIGNLIB_CODE_VERSION"


def code_version() -> str:
    """The last git commit that changed the code (`CODE`), "+dirty" when it has uncommitted
    changes: tells which code a record came from. Outside a git checkout (a copy of the files, e.g.
    sent to a GPU machine without .git), what ``$ALIGNLIB_CODE_VERSION`` says it is, else "unknown".

    Commits that touch only notebooks, the report or the results leave it unchanged, so records
    written over several sessions by the same code carry the same version."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)

    outside = os.environ.get(CODE_VERSION_ENV, "").strip() or "unknown"
    try:
        last = git("log", "-1", "--format=%H", "--", *CODE)
        if last.returncode != 0 or not last.stdout.strip():
            return outside
        dirty = git("status", "--porcelain", "--", *CODE).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return outside
    return last.stdout.strip()[:12] + ("+dirty" if dirty else "")


_LOADED: dict[Path, str] = {}


def loaded_code_version() -> str:
    """`code_version()` as it was when this process first asked (its first run's `seed_everything`):
    the code the process imported. A run of hours goes on with the code it loaded even when the
    checkout changes under it, and its record must say that code, not the checkout's at the end."""
    return _LOADED.setdefault(ROOT, code_version())


def _clean(x):
    """JSON-safe copy: tensors and numpy numbers to Python, NaN/inf refused."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"refusing to write a non-finite number ({x}) into a run record")
    return x


def write_record(name: str, profile: str, *, model_source: str, data_source: str, seed: int,
                 wall_time_s: float, config: dict, metrics: dict, amp: str, **extra) -> Path:
    """Write results/<profile>/<name>.json with the fields every record carries.

    `amp` is the run's precision setting (e.g. `cfg.amp`): the record states what it resolved to
    on this device, and why (`precision.describe`).
    """
    from . import precision
    from .config import model_id

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    record = {
        "name": name,
        "profile": profile,
        "model": model_id(),
        "model_source": model_source,
        "data_source": data_source,
        "seed": seed,
        "wall_time_s": round(wall_time_s, 1),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "hardware": hardware(),
        "device": device.type,
        **precision.describe(amp, device),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code_version": loaded_code_version(),
        "config": config,
        "metrics": metrics,
        **extra,
    }
    path = results_dir(profile) / f"{name}.json"  # `name` may hold a folder: "rm_dev/all_linear"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(record), indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def record_path(name: str, profile: str) -> Path:
    """Where run record `name` of `profile` lives (`name` may hold a folder: "seeds/reinforce_ema_seed1")."""
    return ROOT / "results" / profile / f"{name}.json"


def same_settings(a, b) -> bool:
    """Whether two run settings are equal once written as JSON (tuples become lists), as a record stores them."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def read_record(name: str, profile: str) -> dict:
    path = record_path(name, profile)
    if not path.exists():
        raise FileNotFoundError(f"no run record {path}; run the notebook that writes {name}.json first")
    record = json.loads(path.read_text())
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"run record {path} lacks {missing}")
    return record


class Timer:
    """Wall time since creation (`Timer().elapsed`), or of a block (`with Timer() as t: ...; t.seconds`)."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def matmul_gflops(dtype=torch.float32, n: int = 2048, repeats: int = 10, shape: tuple[int, int, int] | None = None,
                  device: torch.device | str = "cpu") -> float:
    """The measured rate of a matrix product on `device` (the device that does the work), GFLOP/s:
    (n x n) @ (n x n) by default, or (m x k) @ (k x p) for `shape=(m, k, p)`."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    m, k, p = shape or (n, n, n)
    gen = torch.Generator(device=device).manual_seed(0)  # its own: the global random state stays as it was
    a = torch.randn(m, k, dtype=dtype, device=device, generator=gen)
    b = torch.randn(k, p, dtype=dtype, device=device, generator=gen)
    for _ in range(2):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * m * k * p * repeats / (time.perf_counter() - start) / 1e9


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Peak resident memory (MB) while a block runs, sampled every 20 ms by a thread.

    The process-wide peak (`peak_memory_mb`) only grows, so it cannot tell two runs in one
    notebook apart; this can. On CUDA, the block's peak allocated memory instead.
    """

    def __enter__(self):
        import threading

        self.peak_mb, self._stop = 0.0, threading.Event()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return self

        def watch():
            while not self._stop.is_set():
                self.peak_mb = max(self.peak_mb, _rss_mb())
                self._stop.wait(0.02)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if torch.cuda.is_available():
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._thread.join()
            self.peak_mb = max(self.peak_mb, _rss_mb())
