"""Recompute a reward-model record's training time and rates from its own curve (idempotent).

    python report/migrate_train_time.py results/cpu results/full

Until this fix, `runs.reward_model_run` took the training time from its process's timer, which
sees only the steps since the last resume, and counted one epoch's pairs in `train_pairs_per_s`.
A run resumed from a checkpoint (e.g. `rm_dev/two_epochs`) therefore under-stated its training
time and over-stated its rates, and a run of several epochs under-stated its pairs per second.
The record's curve holds every step's seconds (`time/step`, restored with the checkpoint), so
this recomputes, from the record alone: the training time (the sum over steps), the token and pair
rates (the pairs of every epoch, `runs.pairs_seen`), the model's GFLOP/s and its share of the
matrix-product peak (scaled with the token rate), and the record's wall time. Nothing is re-run.
Records without `time/step` (made before it was logged) are left as they are.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from alignlib.runs import pairs_seen  # noqa: E402

NOTE = ("train_wall_time_s, the training rates and wall_time_s recomputed from the curve's time/step (every step, "
        "also those before a resume), pairs per second over every epoch (report/migrate_train_time.py)")


def recomputed(record: dict) -> dict | None:
    """The record with its training time and rates taken from its curve, or None when nothing changes."""
    m, curve = record["metrics"], record.get("curve") or {}
    if "time/step" not in curve or "train_wall_time_s" not in m:
        return None
    rm = SimpleNamespace(**record["config"]["rm"])
    train_s = sum(curve["time/step"])
    tokens_per_s = sum(curve["train/tokens"]) / train_s
    new = {"train_wall_time_s": train_s, "train_tokens_per_s": tokens_per_s,
           "train_pairs_per_s": pairs_seen(curve, m["train_pairs"], rm, m.get("processes", 1)) / train_s,
           "train_model_gflops": m["train_model_gflops"] * tokens_per_s / m["train_tokens_per_s"],
           "matmul_fraction": m["matmul_fraction"] * tokens_per_s / m["train_tokens_per_s"]}
    if all(math.isclose(m[k], v, rel_tol=1e-9) for k, v in new.items()):
        return None
    wall = record["wall_time_s"] - m["train_wall_time_s"] + train_s
    return {**record, "wall_time_s": round(wall, 1), "metrics": {**m, **new}, "train_time_note": NOTE}


def main(folders) -> None:
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.json")):
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or "rm" not in record.get("config", {}):
                continue
            new = recomputed(record)
            if new is not None:
                path.write_text(json.dumps(new, indent=1) + "\n")
                m, n = record["metrics"], new["metrics"]
                print(f"{path}: training {m['train_wall_time_s'] / 60:.1f} -> {n['train_wall_time_s'] / 60:.1f} min, "
                      f"{m['train_pairs_per_s']:.2f} -> {n['train_pairs_per_s']:.2f} pairs/s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["results/cpu"])
