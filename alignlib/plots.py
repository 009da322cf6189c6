"""The figures of the notebooks and the report (each also saved as PNG for the report)."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# the house style, applied inside each figure function (importing alignlib changes no global setting)
STYLE = {"figure.dpi": 110, "savefig.dpi": 150, "font.size": 10, "axes.grid": True,
         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}
CHOSEN, REJECTED = "#2a9d8f", "#e76f51"


def styled(figure_fn):
    """Draw (and save) the figure under STYLE, leaving matplotlib's global settings as they were, except the
    interactive mode: Jupyter's inline backend switches it on with a notebook's first figure, and restoring it
    with the rest would hide every later figure."""
    @functools.wraps(figure_fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            figure = figure_fn(*args, **kwargs)
            interactive = plt.isinteractive()
        plt.interactive(interactive)
        return figure
    return wrapper


def _save(fig, path):
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    v = np.asarray(values, dtype=float)
    return np.array([v[max(0, i - window + 1):i + 1].mean() for i in range(len(v))])


@styled
def length_distributions(lengths, budget: int, path=None):
    """Histograms of prompt / chosen / rejected token counts, and the longest view vs the budget."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    bins = np.linspace(0, 600, 61)
    for col, color in (("prompt", "#457b9d"), ("chosen", CHOSEN), ("rejected", REJECTED)):
        axes[0].hist(lengths[col].clip(upper=600), bins=bins, alpha=0.55, label=col, color=color)
    axes[0].set(xlabel="tokens (clipped at 600)", ylabel="pairs", title="Token counts per part")
    axes[0].legend()
    axes[1].hist(lengths["longest_view"].clip(upper=1200), bins=np.linspace(0, 1200, 61), color="#6d597a")
    axes[1].axvline(budget, color="k", ls="--", label=f"budget {budget}")
    axes[1].set(xlabel="prompt + longer reply, tokens (clipped at 1200)", title="What the RM must read")
    axes[1].legend()
    fig.tight_layout()
    return _save(fig, path)


@styled
def length_difference(lengths, path=None):
    """Histogram of len(chosen) - len(rejected)."""
    diff = (lengths["chosen"] - lengths["rejected"]).clip(-300, 300)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.hist(diff, bins=np.linspace(-300, 300, 61), color="#6d597a")
    ax.axvline(0, color="k", lw=1)
    ax.set(xlabel="tokens of chosen - tokens of rejected (clipped)", ylabel="pairs",
           title="Is the preferred reply longer?")
    fig.tight_layout()
    return _save(fig, path)


@styled
def training_curve(history, window: int = 20, path=None, title="Reward-model training"):
    """Loss and pairwise accuracy per optimizer step (raw and moving average)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    steps = history["step"]
    for ax, key, ref in ((axes[0], "train/loss", np.log(2)), (axes[1], "train/accuracy", 0.5)):
        ax.plot(steps, history[key], color="0.8", lw=0.8, label="per step")
        ax.plot(steps, smooth(history[key], window), color="#1d3557", lw=2, label=f"mean of {window}")
        ax.axhline(ref, color="k", ls="--", lw=1, label="chance")
        ax.set(xlabel="optimizer step", ylabel=f"training {key.split('/')[1]}")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


@styled
def training_curves(histories: dict, window: int = 20, path=None, title="Reward-model training"):
    """Moving averages of the training loss and accuracy of several runs (label -> history)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for i, (label, h) in enumerate(histories.items()):
        for ax, key in ((axes[0], "train/loss"), (axes[1], "train/accuracy")):
            ax.plot(h["step"], smooth(h[key], window), color=f"C{i}", lw=2, label=label)
    for ax, key, ref in ((axes[0], "loss", np.log(2)), (axes[1], "accuracy", 0.5)):
        ax.axhline(ref, color="k", ls="--", lw=1, label="chance")
        ax.set(xlabel="optimizer step", ylabel=f"training {key} (mean of {window})")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


@styled
def reward_histograms(r_chosen, r_rejected, path=None, title="Validation rewards"):
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    lo, hi = np.percentile(np.concatenate([r_chosen, r_rejected]), [0.5, 99.5])
    bins = np.linspace(lo, hi, 40)
    ax.hist(r_chosen, bins=bins, alpha=0.6, color=CHOSEN, label=f"chosen (mean {np.mean(r_chosen):.2f})")
    ax.hist(r_rejected, bins=bins, alpha=0.6, color=REJECTED, label=f"rejected (mean {np.mean(r_rejected):.2f})")
    ax.set(xlabel="reward", ylabel="replies", title=title)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


@styled
def reward_vs_length(lengths, rewards, path=None, title="Reward vs reply length"):
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.scatter(lengths, rewards, s=6, alpha=0.4, color="#1d3557")
    r = np.corrcoef(lengths, rewards)[0, 1]
    ax.set(xlabel="reply length (tokens)", ylabel="reward", title=f"{title} (Pearson r = {r:.2f})")
    fig.tight_layout()
    return _save(fig, path)


@styled
def packed_mask(mask, segments, path=None):
    """Picture of a packed [prompt, chosen, rejected] attention mask (one row of a batch)."""
    names = {0: "pad", 1: "P", 2: "C", 3: "R"}
    labels = [names[int(s)] for s in segments]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.imshow(mask, cmap="Greys", vmin=0, vmax=1.4)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="key (attended to)", ylabel="query", title="Packed pair: who may attend to whom")
    ax.grid(False)
    fig.tight_layout()
    return _save(fig, path)


@styled
def bandit_runs(runs: dict, path=None, title="Two-armed bandit: P(better arm) per step"):
    """label -> list of `toys.bandit` p_good curves (one per seed): each seed thin, their mean thick."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for i, (label, curves) in enumerate(runs.items()):
        for curve in curves:
            ax.plot(curve, color=f"C{i}", lw=0.6, alpha=0.35)
        ax.plot(np.mean(curves, axis=0), color=f"C{i}", lw=2.2, label=f"{label} (mean of {len(curves)} seeds)")
    ax.set(xlabel="step", ylabel="P(better arm)", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@styled
def live_rewards(rewards: list, path=None, title="REINFORCE on the rule reward, live"):
    """Per iteration, each reply's reward (dots) and their mean (line): `rewards` is a list of (batch,) arrays."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    for it, r in enumerate(rewards, start=1):
        ax.scatter(np.full(len(r), it), r, s=8, color="0.6", alpha=0.6)
    ax.plot(range(1, len(rewards) + 1), [np.mean(r) for r in rewards], color="#1d3557", lw=2, marker="o",
            label="batch mean")
    ax.set(xlabel="iteration", ylabel="reward", title=title)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


@styled
def reinforce_curves(histories: dict, window: int = 10, path=None):
    """Reward, KL to SFT and reply length per iteration, one line per run."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for i, (label, h) in enumerate(histories.items()):
        color = f"C{i}"
        it = np.asarray(h["step"])
        axes[0].plot(it, h["reward/mean"], color=color, alpha=0.25, lw=0.8)
        axes[0].plot(it, smooth(h["reward/mean"], window), color=color, lw=2, label=label)
        kl = [(x, v) for x, v in zip(it, h["kl/to_sft"]) if v is not None]
        if kl:
            axes[1].plot(*zip(*kl), color=color, marker="o", ms=3, lw=1.5, label=label)
        axes[2].plot(it, smooth(h["response/length"], window), color=color, lw=2, label=label)
    axes[0].set(xlabel="iteration", ylabel="mean reward of the batch", title="Reward (thin: per batch)")
    axes[1].set(xlabel="iteration", ylabel="nats per reply", title="KL to the SFT model")
    axes[2].set(xlabel="iteration", ylabel="tokens", title="Reply length")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@styled
def advantage_variance(histories: dict, window: int = 10, path=None):
    """Variance of the advantages within each iteration's batch, one line per run."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for i, (label, h) in enumerate(histories.items()):
        it = np.asarray(h["step"])
        ax.plot(it, h["advantage/var"], color=f"C{i}", alpha=0.25, lw=0.8)
        ax.plot(it, smooth(h["advantage/var"], window), color=f"C{i}", lw=2,
                label=f"{label} (mean {np.mean(h['advantage/var']):.3f})")
    ax.set(xlabel="iteration", ylabel="Var[advantage] in the batch", title="Noise in the policy-gradient weights")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@styled
def advantage_moments(histories: dict, window: int = 10, path=None):
    """Per iteration, the mean advantage E[A] (an EMA baseline's lag; 0 for leave-one-out) and the second moment
    E[A^2] = Var(A) + E[A]^2 that scales the policy gradient's noise, with Var(A) dashed; one colour per run."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for i, (label, h) in enumerate(histories.items()):
        it, color = np.asarray(h["step"]), f"C{i}"
        axes[0].plot(it, h["advantage/mean"], color=color, alpha=0.25, lw=0.8)
        axes[0].plot(it, smooth(h["advantage/mean"], window), color=color, lw=2, label=label)
        axes[1].plot(it, smooth(h["advantage/sq_mean"], window), color=color, lw=2,
                     label=f"{label}: E[A²] (mean {np.mean(h['advantage/sq_mean']):.3f})")
        axes[1].plot(it, smooth(h["advantage/var"], window), color=color, lw=1.2, ls="--")
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set(xlabel="iteration", ylabel="E[A] in the batch", title="Mean advantage: the baseline's lag")
    axes[1].set(xlabel="iteration", ylabel="E[A²] (solid), Var(A) (dashed)", title="Second moment of the advantages")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@styled
def paired_rewards(r_sft, r_rl, path=None, title="Same prompt: SFT vs RL reward"):
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.scatter(r_sft, r_rl, s=10, alpha=0.6, color="#1d3557")
    lo, hi = float(min(np.min(r_sft), np.min(r_rl))), float(max(np.max(r_sft), np.max(r_rl)))
    ax.plot([lo, hi], [lo, hi], color="k", ls="--", lw=1)
    ax.set(xlabel="reward of the SFT reply", ylabel="reward of the RL reply", title=title)
    fig.tight_layout()
    return _save(fig, path)


@styled
def score_distributions(logits_chosen, logits_rejected, n_pairs: int = 4, path=None):
    """Predicted p over the scores 1..n for the chosen and rejected reply of a few pairs."""
    lc, lr = np.asarray(logits_chosen, float), np.asarray(logits_rejected, float)
    softmax = lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
    pc, pr = softmax(lc[:n_pairs]), softmax(lr[:n_pairs])
    scores = np.arange(1, lc.shape[1] + 1)
    fig, axes = plt.subplots(1, n_pairs, figsize=(3.2 * n_pairs, 2.8), sharey=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.bar(scores - 0.2, pc[i], width=0.4, color=CHOSEN, label="chosen")
        ax.bar(scores + 0.2, pr[i], width=0.4, color=REJECTED, label="rejected")
        ax.set(xticks=scores, xlabel="score", title=f"pair {i}: E {pc[i] @ scores:.2f} vs {pr[i] @ scores:.2f}")
    np.atleast_1d(axes)[0].set_ylabel("p")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@styled
def reward_curves_grouped(groups: dict, window: int = 10, path=None):
    """Training reward per iteration of several runs, one panel per reward model (their scales differ).

    Args:
        groups: panel title -> {run label -> REINFORCE history}.
    """
    fig, axes = plt.subplots(1, len(groups), figsize=(6.2 * len(groups), 3.4), squeeze=False)
    color = 0
    for ax, (title, histories) in zip(axes[0], groups.items()):
        for label, h in histories.items():
            it = np.asarray(h["step"])
            ax.plot(it, h["reward/mean"], color=f"C{color}", alpha=0.2, lw=0.8)
            ax.plot(it, smooth(h["reward/mean"], window), color=f"C{color}", lw=2, label=label)
            color += 1
        ax.set(xlabel="iteration", ylabel="mean training reward of the batch", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@styled
def cross_judge_winrates(cross: dict, labels: dict | None = None, path=None):
    """Win-rate over SFT of every run under every judge, with 95% intervals.

    Args:
        cross: `evaluate.cross_judge` output, {run: {judge: comparison}}.
        labels: optional run name -> display label.
    """
    runs = list(cross)
    judges = list(next(iter(cross.values())))
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(runs) * len(judges) + 1.2))
    height = 0.8 / len(judges)
    for j, judge in enumerate(judges):
        y = np.arange(len(runs)) + (j - (len(judges) - 1) / 2) * height
        w = np.array([cross[r][judge]["win_rate"] for r in runs])
        ci = np.array([cross[r][judge]["win_rate_ci95"] for r in runs])
        ax.barh(y, w, height=height * 0.9, color=f"C{j}", label=f"judged by {judge}",
                xerr=np.abs(ci.T - w), error_kw={"lw": 1, "capsize": 2})
    ax.axvline(0.5, color="k", ls="--", lw=1)
    ax.set_yticks(np.arange(len(runs)), [(labels or {}).get(r, r) for r in runs])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="win-rate of the trained policy over SFT (ties count half)",
           title="Each policy judged by both reward models")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


@styled
def overoptimization(summary: dict, path=None):
    """Proxy and judge reward gain over SFT against sqrt(KL to SFT), one panel per policy (Gao et al. 2023's axes).

    Args:
        summary: `summaries.write_overoptimization_summary` output; gains are in SFT-reward standard deviations,
            so the two reward models share an axis.
    """
    policies = summary["policies"]
    fig, axes = plt.subplots(1, len(policies), figsize=(5 * len(policies), 3.6), sharex=True, sharey=True, squeeze=False)
    for ax, (name, run) in zip(axes[0], policies.items()):
        pts = run["points"]
        d = np.sqrt(np.maximum([p["kl_to_sft"] for p in pts], 0))
        ax.plot(d, [p["proxy_gain_sd"] for p in pts], "o-", color="C0", label="proxy RM (optimised)")
        ax.plot(d, [p["judge_gain_sd"] for p in pts], "s-", color="C3", label="judge RM (held out)")
        for x, p in zip(d, pts):
            ax.annotate(str(p["iteration"]), (x, p["proxy_gain_sd"]), fontsize=7, xytext=(2, 3), textcoords="offset points")
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel="sqrt(KL to SFT)  (nats$^{1/2}$ per reply)", title=f"{name} (KL penalty {run['kl_beta']})")
    axes[0][0].set_ylabel("reward gain over SFT (SFT std units)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
