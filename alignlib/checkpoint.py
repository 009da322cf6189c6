"""Resumable training: atomic checkpoints of everything a loop needs to continue exactly.

A checkpoint directory holds `step-XXXXXXX/` folders and a `LATEST` file naming the newest
complete one. A checkpoint is written under a temporary name and renamed when complete, and
`LATEST` is replaced atomically after that, so a process killed at any moment leaves either
the previous checkpoint or the new one, never half of one. Each checkpoint stores the
trainable weights, the optimizer (and scheduler) state, the step, the RNG states, the loop's
own state (e.g. the EMA baseline), the history so far, and a fingerprint of the config: a run
with another config refuses to resume from it and says which settings differ.

Weights and optimizer state are stored whole and keyed by parameter name
(`torch.distributed.checkpoint.state_dict`): one process, DDP and sharded (FSDP) training write
the same files, every process takes part in gathering them, and the main process writes them.

A loop calls `resume` once before its first step and `save_if_due` after each step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

FORMAT = 2  # 1: optimizer state keyed by parameter index (before the accelerate launcher)


class CheckpointMismatch(RuntimeError):
    pass


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory, step: int, fingerprint: dict, model, optimizer, extra: dict, keep: int = 1,
         write: bool = True) -> Path:
    """Write checkpoint `step` atomically and point LATEST to it; keep the newest `keep`.

    Under `accelerate launch` every process calls this (gathering sharded state is collective),
    with `write` True in the main process only.
    """
    weights, optim = get_state_dict(model, optimizer, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=True))
    directory = Path(directory)
    if not write:
        return directory / f"step-{step:07d}"
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:07d}"
    tmp = directory / f".tmp-step-{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(weights, tmp / "weights.pt")
    torch.save({"optimizer": optim, "rng": rng_state(), "extra": extra}, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "format": FORMAT, "fingerprint": fingerprint}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = directory / f".LATEST.{os.getpid()}"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, directory / "LATEST")
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(directory) -> Path | None:
    """The newest complete checkpoint of `directory`, or None."""
    pointer = Path(directory) / "LATEST"
    if not pointer.exists():
        return None
    path = Path(directory) / pointer.read_text().strip()
    return path if (path / "meta.json").exists() else None


def load(directory, fingerprint: dict, model, optimizer, last_step: int | None = None) -> tuple[int, dict] | None:
    """Restore the newest checkpoint into `model` and `optimizer`; returns (step, extra) or None.

    Raises CheckpointMismatch when the checkpoint was written by a run with another config, or is
    past `last_step` (the run it would continue ends earlier).
    """
    path = latest(directory)
    if path is None:
        return None
    meta = json.loads((path / "meta.json").read_text())
    saved = meta["fingerprint"]
    if saved != fingerprint:
        diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        raise CheckpointMismatch(
            f"the checkpoint in {directory} was written with other settings ({', '.join(diff)} differ: "
            f"{ {k: saved.get(k) for k in diff} } there, { {k: fingerprint.get(k) for k in diff} } now). "
            "Delete that directory to start over, or restore the settings to resume."
        )
    if last_step is not None and meta["step"] > last_step:
        raise CheckpointMismatch(f"the checkpoint in {directory} is at step {meta['step']}, past this run's last step "
                                 f"{last_step}; delete that directory to start over, or ask for at least {meta['step']}")
    if meta.get("format", 1) != FORMAT:
        raise CheckpointMismatch(f"the checkpoint in {directory} was written by an older alignlib (format "
                                 f"{meta.get('format', 1)}, now {FORMAT}); delete that directory to start over")
    weights = torch.load(path / "weights.pt", map_location="cpu")
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True, strict=False))  # strict: frozen weights not saved
    set_rng_state(state["rng"])
    return meta["step"], state["extra"]


def resume(directory, fingerprint: dict, model, optimizer, label: str, last_step: int | None = None,
           **stateful) -> tuple[int, dict]:
    """Continue a loop from the newest checkpoint in `directory`, if there is one.

    Loads it into `model` and `optimizer` (`load`, which refuses other settings), and each of
    `stateful` (objects with `load_state_dict`, e.g. scaler=..., scheduler=...) from the entry of
    the same name in the checkpoint's extra state; then says so: "[alignlib] resuming <label> <step>
    from <directory>".

    Returns:
        (steps done, the loop's own saved state, e.g. {"history": ...}); (0, {}) for a fresh start:
        no directory, or no checkpoint in it.
    """
    resumed = load(directory, fingerprint, model, optimizer, last_step) if directory is not None else None
    if resumed is None:
        return 0, {}
    step, extra = resumed
    for name, state in stateful.items():
        state.load_state_dict(extra[name])
    print(f"[alignlib] resuming {label} {step} from {directory}")
    return step, extra


def fast_forward(stream, steps: int):
    """`stream` (an iterator of batches) advanced past its first `steps` batches: the ones that the
    steps a resumed run already trained used, so that it goes on with the batch it would have drawn next."""
    for _ in range(steps):
        next(stream)
    return stream


def due(directory, step: int, every: int, last_step: int) -> bool:
    """Whether a loop saves a checkpoint after `step` steps: with a directory, every `every` steps and after
    the last."""
    return directory is not None and (step % every == 0 or step == last_step)


def save_if_due(directory, step: int, every: int, last_step: int, fingerprint: dict, model, optimizer, extra: dict,
                accelerator) -> None:
    """`save` checkpoint `step` when `due`, from every process (gathering sharded state is collective; the
    main process writes), then wait for all: none runs ahead of a checkpoint still being written."""
    if due(directory, step, every, last_step):
        save(directory, step, fingerprint, model, optimizer, extra, write=accelerator.is_main_process)
        accelerator.wait_for_everyone()


def fingerprint(*configs, **extra) -> dict:
    """A JSON-comparable summary of the settings that must match for a resume."""
    out = {}
    for cfg in configs:
        for k, v in (cfg.__dict__ if hasattr(cfg, "__dict__") else dict(cfg)).items():
            out[k] = list(v) if isinstance(v, tuple) else v
    out.update(extra)
    return json.loads(json.dumps(out))
