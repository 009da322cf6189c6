"""Statistics for honest comparisons: bootstrap intervals, pairwise accuracy."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of `values`.

    Args:
        values: (n,) per-example numbers (e.g. 1/0 correctness, or paired differences).
    Returns:
        [lo, hi] such that the middle `level` of the resampled means lies inside.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [float(lo), float(hi)]


def length_analysis(len_chosen, len_rejected, r_chosen, r_rejected) -> dict:
    """How much of a reward model's preference follows reply length.

    Args:
        len_chosen, len_rejected: (n,) reply lengths in tokens.
        r_chosen, r_rejected: (n,) rewards.
    Returns:
        Pearson correlation of reward with length (both replies pooled), how often the RM
        prefers the longer reply, the accuracy of "the longer reply wins" (a length-only
        baseline, ties count half) and the RM's accuracy on the pairs where the chosen reply
        is the shorter one.
    """
    lc, lr = np.asarray(len_chosen, float), np.asarray(len_rejected, float)
    rc, rr = np.asarray(r_chosen, float), np.asarray(r_rejected, float)
    lengths, rewards = np.concatenate([lc, lr]), np.concatenate([rc, rr])
    differ = lc != lr
    rm_prefers_longer = ((rc > rr) == (lc > lr))[differ]
    shorter_chosen = lc < lr
    return {
        "length_reward_corr": float(np.corrcoef(lengths, rewards)[0, 1]),
        "rm_prefers_longer": float(rm_prefers_longer.mean()),
        "length_baseline_accuracy": float(((lc > lr) + 0.5 * (lc == lr)).mean()),
        "accuracy_when_chosen_shorter": float((rc > rr)[shorter_chosen].mean()) if shorter_chosen.any() else float("nan"),
        "n_chosen_shorter": int(shorter_chosen.sum()),
    }
