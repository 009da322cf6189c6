"""Rename the curves of run records to the metric names both loops now share, and drop the two
config fields that no run read (idempotent; nothing is re-run).

    python report/migrate_metric_names.py results/cpu

Since the package was cut into layers (issue 14), both training loops log "step" and
"<group>/<name>" keys (reward_model_loop.HISTORY_KEYS, reinforce_loop.HISTORY_KEYS). Records made
earlier logged bare names in the reward-model loop ("loss", "accuracy", ...) and "iteration",
"baseline", "entropy", "grad_norm", "loss", "time/iteration" in REINFORCE. Their values are kept
as they are; only the names change. `reinforce.reward_mode` (never read by the loop) moves to
`config.reward_mode` where it named a probabilistic run's reward, and `reinforce.kl_beta_variant`
(a notebook's setting) goes: the KL run's own `reinforce.kl_beta` states its beta.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RM_NAMES = {"loss": "train/loss", "accuracy": "train/accuracy", "tokens": "train/tokens", "lr": "optim/lr",
            "grad_norm": "optim/grad_norm"}
REINFORCE_NAMES = {"iteration": "step", "loss": "train/loss", "baseline": "advantage/baseline",
                   "entropy": "policy/entropy", "grad_norm": "optim/grad_norm", "time/iteration": "time/step"}


def renamed(curve: dict) -> dict:
    names = REINFORCE_NAMES if "reward/mean" in curve else RM_NAMES
    return {names.get(k, k): v for k, v in curve.items()}


def migrate(path: Path) -> bool:
    record = json.loads(path.read_text())
    before = json.dumps(record)
    if isinstance(record.get("curve"), dict):
        record["curve"] = renamed(record["curve"])
    rl = record.get("config", {}).get("reinforce")
    if isinstance(rl, dict) and "metrics" in record and record.get("name", "").startswith("reinforce"):
        rl.pop("kl_beta_variant", None)
        mode = rl.pop("reward_mode", None)
        if mode not in (None, "scalar"):
            record["config"]["reward_mode"] = mode
    if json.dumps(record) == before:
        return False
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return True


if __name__ == "__main__":
    for folder in map(Path, sys.argv[1:] or ["results/cpu"]):
        for path in sorted(folder.rglob("*.json")):
            if migrate(path):
                print("migrated", path)
