"""Run records: one JSON object per run under results/<profile>/, read by notebooks and the report.

Runs write under the output root: the repository, or ``$ALIGNLIB_RESULTS_DIR`` (e.g. a Google Drive
folder on Colab, where a VM reset would otherwise lose every result and checkpoint), which then holds
``results/<profile>/`` and ``checkpoints/<profile>/`` as the repository does. The published records and
adapters (the committed ``results/cpu/``, ``results/full/``) stay in the repository and are read from
there when the output root does not have them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
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


RESULTS_ENV = "ALIGNLIB_RESULTS_DIR"


def output_root() -> Path:
    """Where runs write `results/` and `checkpoints/`: ``$ALIGNLIB_RESULTS_DIR``, else the repository."""
    where = os.environ.get(RESULTS_ENV, "").strip()
    return Path(where).expanduser().resolve() if where else ROOT


def results_dir(profile: str) -> Path:
    d = output_root() / "results" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def checkpoints_dir(profile: str) -> Path:
    d = output_root() / "checkpoints" / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def portable(path: Path | str) -> str:
    """A path as a record stores it: relative to the output root, or to the repository (the published
    adapters), so that records stay true when their folder moves; absolute only outside both. A relative path
    is taken as one already written so."""
    if not Path(path).is_absolute():
        return Path(path).as_posix()
    path = Path(path).resolve()
    for root in (output_root(), ROOT):
        if path.is_relative_to(root.resolve()):
            return path.relative_to(root.resolve()).as_posix()
    return str(path)


def resolve(recorded: Path | str) -> Path:
    """The file or folder a record names (`portable`): under the output root where it is there, else the
    repository's (published) one."""
    recorded = Path(recorded)
    if recorded.is_absolute():
        return recorded
    mine = output_root() / recorded
    return mine if mine.exists() else ROOT / recorded


def _rss_mb() -> float | None:
    """Resident memory of this process now (MB), from psutil on every platform; None if it cannot be read."""
    try:
        return psutil.Process().memory_info().rss / 2**20
    except (psutil.Error, OSError):
        return None


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process so far (MB); on CUDA, the peak allocated instead; None where the
    platform does not tell (a record then says null, never a wrong number)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        import resource  # Linux and macOS; not on Windows
    except ImportError:
        resource = None
    if resource is not None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS: bytes; Linux: KiB
    try:
        info = psutil.Process().memory_info()
    except (psutil.Error, OSError):
        return None
    return getattr(info, "peak_wset", info.rss) / 2**20  # Windows: the peak working set


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo on Linux, sysctl on macOS, else what `platform` says, else "unknown"."""
    from .precision import cpuinfo

    name = cpuinfo("model name")
    if not name and sys.platform == "darwin":
        try:
            name = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            name = None
    return name or platform.processor() or platform.machine() or "unknown"


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
                 wall_time_s: float, config: dict, metrics: dict, amp: str, path: Path | None = None,
                 **extra) -> Path:
    """Write results/<profile>/<name>.json (or `path`) with the fields every record carries.

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
        "peak_memory_mb": _round(peak_memory_mb()),
        "hardware": hardware(),
        "device": device.type,
        **precision.describe(amp, device),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code_version": loaded_code_version(),
        "config": config,
        "metrics": metrics,
        **extra,
    }
    path = Path(path) if path else results_dir(profile) / f"{name}.json"  # `name` may hold a folder: "rm_dev/x"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(record), indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _round(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


def record_path(name: str, profile: str) -> Path:
    """Where run record `name` of `profile` lives (`name` may hold a folder: "seeds/reinforce_ema_seed1")."""
    return output_root() / "results" / profile / f"{name}.json"


def same_settings(a, b) -> bool:
    """Whether two run settings are equal once written as JSON (tuples become lists), as a record stores them."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


# which notebook writes each record a later notebook reads
WRITTEN_BY = {"data": "01_data", "rm_scalar": "02_scalar_reward_model", "reinforce_ema": "03_reinforce",
              "reinforce_rloo": "03_reinforce", "reinforce_ema_kl": "03_reinforce",
              "rm_prob": "04_probabilistic_reward_model", "rm_prob_beats": "04_probabilistic_reward_model",
              "reinforce_prob_expected": "04_probabilistic_reward_model",
              "reinforce_prob_sampled": "04_probabilistic_reward_model", "comparison": "05_comparison"}
PUBLISHED = "cpu"  # the profile whose records are committed for every notebook


class MissingRecordError(FileNotFoundError):
    """A run record that an earlier notebook writes has not been made here (the message says which notebook)."""


def read_record(name: str, profile: str) -> dict:
    """Run record `name` of `profile` from the output root, else the repository's published one.

    MissingRecordError (naming the notebook to run) when neither has it."""
    path = resolve(f"results/{profile}/{name}.json")  # the output root's, else the one published with the repository
    if not path.exists():
        notebook = WRITTEN_BY.get(name.split("/")[0], "that writes it")
        raise MissingRecordError(
            f"no run record {name}.json at profile {profile!r} (looked in {record_path(name, profile).parent}): notebook "
            f"{notebook} has not run at this profile on this machine. Run it first (on Colab each notebook gets its own "
            f"machine: set ${RESULTS_ENV} to a Google Drive folder to keep records between them), or show the published "
            f"{PUBLISHED!r} records instead (results.records_here_or_published).")
    record = json.loads(path.read_text())
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"run record {path} lacks {missing}")
    return record


def records_here_or_published(names, profile: str) -> tuple[str, dict[str, dict]]:
    """(profile, {name: record}): the records `names` of `profile` when all of them exist, else the published
    `PUBLISHED` ones, all of one profile (never a mix), with a notice saying so. A notebook that needs the runs
    of earlier notebooks shows the published ones when those notebooks have not run here (a fresh Colab
    machine), instead of failing. At the smoke profile nothing is substituted (MissingRecordError): smoke
    checks that the notebooks' own chain works."""
    try:
        return profile, {name: read_record(name, profile) for name in names}
    except MissingRecordError as missing:
        if profile in ("smoke", PUBLISHED):
            raise
        records = {name: read_record(name, PUBLISHED) for name in names}
        made = sorted({f"{r['hardware'].split(',')[0]}, code {r['code_version']}" for r in records.values()})
        print(f"[alignlib] NOTE: {missing}\n[alignlib] Showing the PUBLISHED {PUBLISHED!r} records instead (committed "
              f"with the course; made on {'; '.join(made)}), not runs of this machine.")
        return PUBLISHED, records


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


class PeakMemory:
    """Peak resident memory (MB) while a block runs, sampled every 20 ms by a thread (psutil).

    The process-wide peak (`peak_memory_mb`) only grows, so it cannot tell two runs in one
    notebook apart; this can. On CUDA, the block's peak allocated memory instead. Where the
    memory cannot be read, `peak_mb` is None: the run and its record go on without it.
    """

    def __enter__(self):
        import threading

        self.peak_mb, self._stop = None, threading.Event()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return self

        def watch():
            while not self._stop.is_set():
                self._sample()
                self._stop.wait(0.02)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        now = _rss_mb()
        if now is not None:
            self.peak_mb = now if self.peak_mb is None else max(self.peak_mb, now)

    def __exit__(self, *exc):
        self._stop.set()
        if torch.cuda.is_available():
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._thread.join()
            self._sample()
