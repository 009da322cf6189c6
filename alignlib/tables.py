"""Tables of the run records and study summaries, as pandas DataFrames, for the notebooks."""

from __future__ import annotations

import pandas as pd

from . import stats


def precision_label(record: dict) -> str:
    """How a run computed, in words: its record's `precision` is the autocast it used, "none" for plain float32."""
    p = record["precision"]
    return {"none": "float32", "fp16": "fp16 autocast with loss scaling"}.get(p, f"{p} autocast")


def rm_ablation_table(records: dict) -> pd.DataFrame:
    """One row per finished variant: what it changes, its development accuracy and loss, and its
    accuracy minus the baseline's on the same development pairs (paired bootstrap interval)."""
    base = records.get("baseline")
    rows = []
    for variant, r in records.items():
        m, rm = r["metrics"], r["config"]["rm"]
        row = {"variant": variant, "train pairs": m["train_pairs"], "LoRA on": ", ".join(rm["lora_target_modules"]),
               "epochs": rm["epochs"], "dev pairs": m["n_pairs"], "dev accuracy": m["val_accuracy"],
               "dev accuracy 95% CI": m["val_accuracy_ci95"], "dev loss": m["val_loss"],
               "train min": m["train_wall_time_s"] / 60, "peak memory GB": r["peak_memory_mb"] / 1024}
        if base is not None:
            d = stats.paired_accuracy_difference(r["margins"], base["margins"])
            row.update({"vs baseline": d["accuracy_diff"], "vs baseline 95% CI": d["accuracy_diff_ci95"]})
        rows.append(row)
    return pd.DataFrame(rows)


def seeds_table(summary: dict, labels: dict):
    """One row per complete configuration: the reward gain of each seed, and the gain, win-rate and KL over
    seeds (mean and t interval; KL mean and sd)."""
    rows = {}
    for name, c in summary["configs"].items():
        a, row = c["across_seeds"], {}
        for i, seed in enumerate(summary["seeds"]):
            row[f"gain, seed {seed}"] = c["per_seed"]["reward_delta_mean"][i]
        row |= {"gain: mean over seeds": a["reward_delta_mean"]["mean"], "gain: 95% CI over seeds": a["reward_delta_mean"]["ci95"],
                "win-rate: mean": a["win_rate"]["mean"], "win-rate: 95% CI over seeds": a["win_rate"]["ci95"],
                "KL: mean": a["kl_to_sft"]["mean"], "KL: sd": a["kl_to_sft"]["sd"]}
        rows[labels.get(name, name)] = row
    return pd.DataFrame(rows).T
