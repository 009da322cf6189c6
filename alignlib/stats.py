"""Statistics for honest comparisons: bootstrap intervals, pairwise accuracy, paired policy
comparisons, diversity of replies, and how a distributional reward model uses its scores.

Pure NumPy functions of per-example numbers; no model is needed.
"""

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



def pairwise_metrics(r_chosen: np.ndarray, r_rejected: np.ndarray, seed: int = 0) -> dict:
    """Accuracy (with bootstrap 95% interval), Bradley-Terry loss and reward statistics.

    Args:
        r_chosen, r_rejected: (n,) rewards of the chosen and rejected replies.
    """
    margin = np.asarray(r_chosen, dtype=np.float64) - np.asarray(r_rejected, dtype=np.float64)
    correct = (margin > 0).astype(np.float64)
    loss = np.logaddexp(0.0, -margin)  # -log sigmoid(margin), stable
    return {
        "val_accuracy": float(correct.mean()),
        "val_accuracy_ci95": bootstrap_ci(correct, seed=seed),
        "val_loss": float(loss.mean()),
        "val_margin_mean": float(margin.mean()),
        "reward_chosen_mean": float(np.mean(r_chosen)),
        "reward_chosen_std": float(np.std(r_chosen)),
        "reward_rejected_mean": float(np.mean(r_rejected)),
        "reward_rejected_std": float(np.std(r_rejected)),
        "n_pairs": int(margin.size),
    }



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



# ------------------------------------------------------------- policy comparison (SFT vs RL)


def distinct_n(token_lists, n: int = 2) -> float:
    """Corpus-level distinct-n: unique n-grams / all n-grams over every reply (1.0 = no reuse)."""
    grams = [tuple(t[i:i + n]) for t in token_lists for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(token_lists, n: int = 4) -> float:
    """Mean over replies of the share of n-grams that already occurred earlier in the same reply."""
    rates = []
    for t in token_lists:
        grams = [tuple(t[i:i + n]) for i in range(len(t) - n + 1)]
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return float(np.mean(rates)) if rates else 0.0


# two-sided 95% quantiles of Student's t with 1..10 degrees of freedom (t_{0.975, df})
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def across_seeds(values) -> dict:
    """Mean, sample standard deviation and 95% t-interval of one metric over n training seeds.

    Args:
        values: (n,) one number per seed (e.g. each run's paired reward gain), 2 <= n <= 11.
    Returns:
        n, mean, sd (ddof 1), ci95 = mean -/+ t_{0.975, n-1} sd / sqrt(n) (the spread of training
        randomness; each run's bootstrap interval covers only the sampling of its prompts), min, max.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or not 2 <= x.size <= len(T_975) + 1:
        raise ValueError(f"across_seeds needs 2 to {len(T_975) + 1} values (one per seed), got {x.size}")
    sd = float(x.std(ddof=1))
    half = T_975[x.size - 2] * sd / np.sqrt(x.size)
    return {"n": int(x.size), "mean": float(x.mean()), "sd": sd, "ci95": [float(x.mean() - half), float(x.mean() + half)],
            "min": float(x.min()), "max": float(x.max())}


def seed_difference(values_a, values_b) -> dict:
    """Mean of configuration A minus mean of B over independent training seeds, with a 95% interval.

    Args:
        values_a, values_b: (n_a,), (n_b,) one number per seed (e.g. each run's reward gain), n_a + n_b <= 12.
    Returns:
        diff, ci95 (two-sample t with the pooled standard deviation, n_a + n_b - 2 degrees of freedom),
        and holds: whether the interval excludes 0, i.e. whether the seeds rank A and B.
    """
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    df = a.size + b.size - 2
    if a.ndim != 1 or b.ndim != 1 or a.size < 2 or b.size < 2 or df > len(T_975):
        raise ValueError(f"seed_difference needs 2 or more values per configuration (one per seed) and at most "
                         f"{len(T_975) + 2} in all, got {a.size} and {b.size}")
    pooled = ((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / df
    diff, half = float(a.mean() - b.mean()), T_975[df - 1] * float(np.sqrt(pooled * (1 / a.size + 1 / b.size)))
    return {"diff": diff, "ci95": [diff - half, diff + half], "holds": bool(diff - half > 0 or diff + half < 0)}


def paired_accuracy_difference(margins_a, margins_b, seed: int = 0) -> dict:
    """Accuracy of reward model A minus that of B on the same pairs, with a paired 95% interval.

    Args:
        margins_a, margins_b: (n,) reward margins r(chosen) - r(rejected) of each model on pair i.
    Returns:
        accuracy_a, accuracy_b, accuracy_diff and accuracy_diff_ci95 (bootstrap over the pairs,
        resampled jointly for both models, so that the pairs both get right or both get wrong cancel).
    """
    a, b = np.asarray(margins_a, float), np.asarray(margins_b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired margins need two (n,) arrays over the same pairs, got {a.shape} and {b.shape}")
    diff = (a > 0).astype(float) - (b > 0).astype(float)
    return {"accuracy_a": float((a > 0).mean()), "accuracy_b": float((b > 0).mean()),
            "accuracy_diff": float(diff.mean()), "accuracy_diff_ci95": bootstrap_ci(diff, seed=seed)}


def paired_reward_comparison(rewards_sft, rewards_rl, seed: int = 0) -> dict:
    """Mean rewards, the paired difference and the win-rate of RL over SFT, each with a 95% interval.

    Args:
        rewards_sft, rewards_rl: (n,) rewards of each policy's reply to prompt i.
    Returns:
        n_eval_prompts, reward_sft_mean, reward_rl_mean, reward_delta_mean, reward_delta_ci95,
        win_rate (ties count half), win_rate_ci95 and reward_delta_sd_units: the mean difference
        in standard deviations of the SFT rewards, comparable across judges on different scales
        (None when the SFT rewards are all equal).
    """
    r0, r1 = np.asarray(rewards_sft, float), np.asarray(rewards_rl, float)
    if r0.shape != r1.shape or r0.ndim != 1:
        raise ValueError(f"paired rewards need two (n,) arrays, got {r0.shape} and {r1.shape}")
    diff = r1 - r0
    wins = (diff > 0) + 0.5 * (diff == 0)
    sd = r0.std()
    return {
        "n_eval_prompts": int(r0.size),
        "reward_sft_mean": float(r0.mean()), "reward_rl_mean": float(r1.mean()),
        "reward_delta_mean": float(diff.mean()), "reward_delta_ci95": bootstrap_ci(diff, seed=seed),
        "reward_delta_sd_units": float(diff.mean() / sd) if sd > 0 else None,
        "win_rate": float(wins.mean()), "win_rate_ci95": bootstrap_ci(wins, seed=seed),
    }


def length_controlled_gain(rewards_sft, rewards_rl, length_sft, length_rl, n_boot: int = 2000, seed: int = 0) -> dict:
    """How much of a policy's paired reward gain comes with longer replies: the least-squares fit
    gain_i = a + b * (length_rl_i - length_sft_i) over the prompts.

    Args:
        rewards_sft, rewards_rl: (n,) rewards of each policy's reply to prompt i.
        length_sft, length_rl: (n,) the replies' lengths in tokens.
    Returns:
        reward_per_token b, reward_delta_same_length a (the gain of a reply as long as SFT's) with a
        bootstrap 95% interval over the prompts, and length_share_of_gain = b * mean(length change) /
        mean(gain) (None when the mean gain is 0; None for b and a when no reply changed length).
    """
    gain = np.asarray(rewards_rl, float) - np.asarray(rewards_sft, float)
    dlen = np.asarray(length_rl, float) - np.asarray(length_sft, float)
    if not gain.shape == dlen.shape == (gain.size,):
        raise ValueError(f"length_controlled_gain needs four (n,) arrays over the same prompts, got {gain.shape}, {dlen.shape}")

    def fit(g, d):
        if np.ptp(d) == 0:
            return None, None
        slope = float(np.cov(d, g, bias=True)[0, 1] / np.var(d))
        return slope, float(g.mean() - slope * d.mean())

    slope, intercept = fit(gain, dlen)
    out = {"reward_per_token": slope, "reward_delta_same_length": intercept, "reward_delta_same_length_ci95": None,
           "length_share_of_gain": None}
    if slope is None:
        return out
    rng = np.random.default_rng(seed)
    boots = [fit(gain[i], dlen[i])[1] for i in rng.integers(0, gain.size, size=(n_boot, gain.size))]
    boots = [b for b in boots if b is not None]
    out["reward_delta_same_length_ci95"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    if gain.mean() != 0:
        out["length_share_of_gain"] = float(slope * dlen.mean() / gain.mean())
    return out


def gain_by_ending(rewards_sft, rewards_rl, ended_sft, ended_rl, seed: int = 0) -> dict:
    """The paired gain split by whether each policy's reply closed its turn or was cut at the token cap.

    Args:
        rewards_sft, rewards_rl: (n,) rewards; ended_sft, ended_rl: (n,) bools.
    Returns:
        for each group "both_ended", "rl_only_ended", "sft_only_ended", "neither_ended":
        {"n": prompts, "reward_delta_mean": mean gain, "reward_delta_ci95": its bootstrap 95% interval over the
        group's prompts, and "share_of_gain": the group's part of the mean gain over all n prompts,
        n_group * mean_group / (n * mean) (the four add up to 1; None when the mean gain is 0)}. An empty
        group has None for each; a group of one prompt has no interval.
    """
    gain = np.asarray(rewards_rl, float) - np.asarray(rewards_sft, float)
    es, er = np.asarray(ended_sft, bool), np.asarray(ended_rl, bool)
    groups = {"both_ended": es & er, "rl_only_ended": ~es & er, "sft_only_ended": es & ~er, "neither_ended": ~es & ~er}
    total = gain.sum()
    return {name: {"n": int(m.sum()), "reward_delta_mean": float(gain[m].mean()) if m.any() else None,
                   "reward_delta_ci95": bootstrap_ci(gain[m], seed=seed) if m.sum() > 1 else None,
                   "share_of_gain": float(gain[m].sum() / total) if m.any() and total != 0 else None}
            for name, m in groups.items()}


def ended_within(lengths, ended, caps) -> dict:
    """The share of replies that closed their turn within each cap on new tokens.

    Args:
        lengths: (n,) reply lengths in tokens, up to and including the end-of-turn token when there is one;
        ended: (n,) bools, whether the reply closed its turn within the budget it was sampled with;
        caps: token caps, each at most that budget.
    Returns:
        {cap: share of the n replies that ended within `cap` tokens}.
    """
    lengths, ended = np.asarray(lengths), np.asarray(ended, bool)
    return {int(cap): float((ended & (lengths <= cap)).mean()) for cap in caps}


def cap_for_share(lengths, ended, share: float = 0.9) -> int | None:
    """The smallest cap on new tokens within which at least `share` of the replies close their turn, or None when
    fewer than that ended within the budget they were sampled with. (n,) lengths and ended as in `ended_within`."""
    done = np.sort(np.asarray(lengths)[np.asarray(ended, bool)])
    needed = int(np.ceil(share * len(lengths) - 1e-9))
    return int(done[needed - 1]) if 0 < needed <= done.size else None


def distribution_report(logits_chosen, logits_rejected) -> dict:
    """How a distributional reward model uses its scores 1..n on a set of pairs.

    Args:
        logits_chosen, logits_rejected: (pairs, n) head outputs.
    Returns:
        spread of E[p], mean Var[p], how many score classes are ever the most likely one (and
        the share of the most used), the entropy of the average distribution (log n = uniform use),
        and mean Var[p] on pairs ranked right vs wrong.
    """
    lc, lr = np.asarray(logits_chosen, float), np.asarray(logits_rejected, float)
    logits = np.concatenate([lc, lr])
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    scores = np.arange(1, p.shape[1] + 1)
    mean = p @ scores
    var = p @ scores**2 - mean**2
    n = len(lc)
    right = mean[:n] > mean[n:]
    pair_var = (var[:n] + var[n:]) / 2
    top = np.bincount(p.argmax(-1), minlength=p.shape[1]) / len(p)
    avg = p.mean(0)
    return {
        "expected_score_mean": float(mean.mean()), "expected_score_std": float(mean.std()),
        "expected_score_min": float(mean.min()), "expected_score_max": float(mean.max()),
        "var_mean": float(var.mean()),
        "classes_used_as_argmax": int((top > 0).sum()), "top_class_share": float(top.max()),
        "avg_distribution_entropy": float(-(avg * np.log(avg + 1e-12)).sum()), "uniform_entropy": float(np.log(p.shape[1])),
        "var_when_right": float(pair_var[right].mean()) if right.any() else float("nan"),
        "var_when_wrong": float(pair_var[~right].mean()) if (~right).any() else float("nan"),
    }

