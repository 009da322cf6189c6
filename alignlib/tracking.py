"""Where the training loops send each step's metrics, besides the history they return.

Two places, both optional:

- an experiment tracker of accelerate (TensorBoard, wandb, trackio, ...), chosen by
  ``$ALIGNLIB_TRACKER`` (unset or "none": no tracker, the default); local trackers write under
  ``$ALIGNLIB_TRACKER_DIR`` (default ``logs/trackers`` in the current directory);
- a plain-text log, ``<checkpoint_dir>/train_log.jsonl``, one JSON object per step (the history's
  row), when the run has a checkpoint directory. A resumed run rewrites it from the history
  restored with the checkpoint and appends to it: one line per step, none repeated, none lost.

A loop calls `tracker_from_env` when it creates its Accelerator (an unknown tracker or one not
installed fails there, before training), `start_run` once, `log_step` after each step and
`end_run` at the end. Only the main process writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

TRACKER_ENV = "ALIGNLIB_TRACKER"
TRACKER_DIR_ENV = "ALIGNLIB_TRACKER_DIR"
DEFAULT_TRACKER_DIR = "logs/trackers"
TRAIN_LOG = "train_log.jsonl"


def tracker_from_env() -> dict:
    """Keyword arguments of `Accelerator` for the tracker ``$ALIGNLIB_TRACKER`` names: {} when unset or
    "none"; else {"log_with": name, "project_dir": ``$ALIGNLIB_TRACKER_DIR``}.

    Raises ValueError naming the setting when accelerate does not know the tracker, or its package
    is not installed (accelerate itself would only skip it, silently).
    """
    name = os.environ.get(TRACKER_ENV, "").strip().lower()
    if name in ("", "none"):
        return {}
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    if name not in LOGGER_TYPE_TO_CLASS:
        raise ValueError(f"${TRACKER_ENV}={name!r} is not a tracker accelerate knows; use one of "
                         f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}, or 'none' (or unset it) to track nothing")
    if name in LoggerType.list() and name not in map(str, get_available_trackers()):
        raise ValueError(f"${TRACKER_ENV}={name!r} needs the {name} package, which is not installed: "
                         f"pip install {name} (or unset ${TRACKER_ENV} to track nothing)")
    return {"log_with": name, "project_dir": os.environ.get(TRACKER_DIR_ENV) or DEFAULT_TRACKER_DIR}


def start_run(accelerator, project: str, config, checkpoint_dir=None, history: dict | None = None) -> None:
    """Start the trackers (if any) with the run's config, and (re)write the checkpoint directory's
    train log with the rows of `history` (those restored from a checkpoint; none for a fresh run)."""
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    accelerator.init_trackers(project, config={k: v if isinstance(v, (bool, int, float, str)) else str(v)
                                               for k, v in values.items()})
    if checkpoint_dir is not None and accelerator.is_main_process:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        path = Path(checkpoint_dir) / TRAIN_LOG
        tmp = path.with_name(f".{TRAIN_LOG}.{os.getpid()}")
        rows = [dict(zip(history, values)) for values in zip(*history.values())] if history else []
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        os.replace(tmp, path)  # the lines of steps after the checkpoint (an interrupted run's) are dropped


def log_step(accelerator, row: dict, checkpoint_dir=None) -> None:
    """Send one step's metrics (the history's row; "step" is the step) to the trackers, and append
    the row to the train log when the run has a checkpoint directory."""
    accelerator.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=row["step"])  # None: not measured
    if checkpoint_dir is not None and accelerator.is_main_process:
        with open(Path(checkpoint_dir) / TRAIN_LOG, "a") as f:
            f.write(json.dumps(row) + "\n")


def end_run(accelerator) -> None:
    """Close the trackers. Not `Accelerator.end_training`, which also ends the process group that the
    rest of a run under `accelerate launch` (evaluation, the next loop) still uses."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def project_name(profile, name: str) -> str:
    """The name a run logs under in the experiment tracker: "alignlib-cpu-reinforce_ema"."""
    return f"alignlib-{profile.name}-{name.replace('/', '-')}"
