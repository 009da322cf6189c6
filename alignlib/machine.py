"""The machine a run is on: its process and device, the clock, memory, the hardware, and its speed.

Everything a run record says about where and how fast it ran comes from here (`records.write_record`
asks `hardware` and `peak_memory_mb`); nothing here knows about runs. Memory comes from psutil (or
torch on CUDA) on every platform, and a figure the platform does not give is None, never a guess.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import subprocess
import sys
import time

import numpy as np
import psutil
import torch


def seed_everything(seed: int) -> None:
    """The one seed setting of a run: Python's, NumPy's and torch's global generators.

    alignlib's own randomness uses explicit generators derived from the same seed (batch order,
    prompt order, per-iteration sampling seeds), so this guards what libraries draw globally
    (LoRA initialisation, dropout). The seed is stored in every run record.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def process_state():
    """accelerate's view of this process: its index, the number of processes, the main one, its
    device. One process without `accelerate launch`; under it, CPU processes with ACCELERATE_USE_CPU=true.

    Without CUDA the device is the CPU, also on a Mac with Apple's MPS backend, which accelerate would pick
    but this course has not been tested on (its precision choice and records know CUDA and the CPU)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def device() -> torch.device:
    """This process's device: under `accelerate launch`, the GPU of its local rank (or the CPU);
    otherwise CUDA when available, else the CPU."""
    return process_state().device


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


@functools.lru_cache(maxsize=None)
def cpuinfo(key: str) -> str | None:
    """The first value of `key` in /proc/cpuinfo ("model name", "flags", ...); None off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == key), None)
    except OSError:
        return None


def cpu_bf16_flags() -> tuple[str, ...]:
    """The CPU's native bf16 features named in /proc/cpuinfo (Linux x86), e.g. ('amx_bf16', 'avx512_bf16')."""
    return tuple(sorted(f for f in (cpuinfo("flags") or "").split() if f in ("amx_bf16", "avx512_bf16")))


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
                  device: torch.device | str = "cpu", warmup: int = 2) -> float:
    """The measured rate of a matrix product on `device` (the device that does the work), GFLOP/s:
    (n x n) @ (n x n) by default, or (m x k) @ (k x p) for `shape=(m, k, p)`."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    m, k, p = shape or (n, n, n)
    gen = torch.Generator(device=device).manual_seed(0)  # its own: the global random state stays as it was
    a = torch.randn(m, k, dtype=dtype, device=device, generator=gen)
    b = torch.randn(k, p, dtype=dtype, device=device, generator=gen)
    for _ in range(warmup):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * m * k * p * repeats / (time.perf_counter() - start) / 1e9


def cpu_seconds() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the whole machine, CPU seconds of this process and its children, wall clock) now, from
    psutil; None where the platform does not tell."""
    try:
        machine, own = psutil.cpu_times(), psutil.Process().cpu_times()
    except (psutil.Error, OSError, AttributeError):
        return None
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    busy = sum(machine) - idle - getattr(machine, "guest", 0.0) - getattr(machine, "guest_nice", 0.0)
    mine = own.user + own.system + getattr(own, "children_user", 0.0) + getattr(own, "children_system", 0.0)
    return busy, mine, time.time()


def others_cpu_share(start: tuple | None, end: tuple | None, cores: int | None = None) -> float | None:
    """The share of the machine's CPU capacity that other processes used between two `cpu_seconds` readings:
    (machine busy - this process) / (wall seconds x cores), in [0, 1]. Near 0: the run had the machine to
    itself, and its times are its own; a timing made beside other work is marked by it. None where unknown."""
    if start is None or end is None or end[2] <= start[2]:
        return None
    cores = cores or os.cpu_count() or 1
    others = (end[0] - start[0]) - (end[1] - start[1])
    return float(min(1.0, max(0.0, others / ((end[2] - start[2]) * cores))))


class PeakMemory:
    """Peak resident memory (MB) while a block runs, sampled every 20 ms by a thread (psutil).

    The process-wide peak (`peak_memory_mb`) only grows, so it cannot tell two runs in one
    notebook apart; this can. On CUDA, the block's peak allocated memory instead. Where the
    memory cannot be read, `peak_mb` is None: the run and its record go on without it.
    It also measures `others_cpu_share` (`others_cpu_share`): whether other work shared the
    machine's CPUs while the block ran, which would slow it.
    """

    def __enter__(self):
        import threading

        self.peak_mb, self.others_cpu_share, self._stop = None, None, threading.Event()
        self._cpu_start = cpu_seconds()
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
        self.others_cpu_share = others_cpu_share(self._cpu_start, cpu_seconds())
        if torch.cuda.is_available():
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._thread.join()
            self._sample()


def training_speed(flops_per_token: float, history: dict, n_pairs: int, train_s: float, dtype: torch.dtype) -> dict:
    """Tokens and pairs per second of a reward-model run (`n_pairs`: the pairs it trained on, every epoch
    counted; `train_s`: its training seconds), and the share of the device's measured matrix-product peak
    (in `dtype`, the precision the run resolved to) that the model's FLOPs (`models.train_flops_per_token`)
    reached."""
    dev = device()
    peak = matmul_gflops(dtype, device=dev)
    tokens_per_s = sum(history["train/tokens"]) / train_s
    achieved = tokens_per_s * flops_per_token / 1e9
    return {"train_tokens_per_s": tokens_per_s, "train_pairs_per_s": n_pairs / train_s, "train_wall_time_s": train_s,
            "train_model_gflops": achieved, f"matmul_gflops_{str(dtype).split('.')[-1]}": peak,
            "matmul_fraction": achieved / peak}
