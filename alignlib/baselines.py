"""Baselines and advantages of REINFORCE.

The policy-gradient theorem for one reply y to a prompt x:

    grad E_y[r(x, y)] = E_y[(r(x, y) - b) * grad log pi(y | x)]

for any baseline b that does not depend on y. Two baselines:
- EMA: b_t = alpha * b_{t-1} + (1 - alpha) * mean(r_t), used BEFORE it sees the current batch
  (so no reply's own reward is in its baseline; the first batch, with no history, uses its mean);
- leave-one-out (RLOO): k replies per prompt, each judged against the mean of the other k - 1.

Pure functions of tensors; tests/test_baselines.py checks each against a hand computation.
"""

from __future__ import annotations

import torch


def ema_baseline(prev: float | None, rewards: torch.Tensor, alpha: float) -> float:
    """Exponential moving average of the mean reward.

    Args:
        prev: baseline before this batch (b_{t-1}); None before the first batch, when the
            average starts at the first batch's mean.
        rewards: (batch,) rewards of the current batch.
        alpha: weight kept on the previous baseline, 0 <= alpha < 1.
    Returns:
        b_t = alpha * prev + (1 - alpha) * rewards.mean()
    """
    mean = float(rewards.mean())
    return mean if prev is None else alpha * prev + (1 - alpha) * mean


def rloo_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline: each reply's baseline is the mean reward of the others of its prompt.

    Args:
        rewards: (n_prompts, k) rewards of k >= 2 replies per prompt.
    Returns:
        (n_prompts, k) baselines, b_ij = (sum_l r_il - r_ij) / (k - 1).
    """
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("the leave-one-out baseline needs k >= 2 replies per prompt")
    return (rewards.sum(-1, keepdim=True) - rewards) / (k - 1)


def ema_advantages(rewards: torch.Tensor, baseline: float | None, alpha: float) -> tuple[torch.Tensor, float, float]:
    """Advantages against the EMA baseline of the previous batches, and the updated baseline.

    Args:
        rewards: (batch,) rewards of this batch.
        baseline: the EMA after the previous batch; None at the first batch.
        alpha: weight kept on the previous baseline.
    Returns:
        ((batch,) advantages r - b, the b used, the EMA after this batch). b is `baseline`, or
        the batch's own mean at the first batch.
    """
    b = float(rewards.mean()) if baseline is None else baseline
    return rewards - b, b, ema_baseline(baseline, rewards, alpha)


def rloo_advantages(rewards: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    """Advantages against the leave-one-out baseline of each prompt's k replies.

    Args:
        rewards: (n_prompts * k,) rewards, the k replies of a prompt adjacent.
    Returns:
        ((n_prompts * k,) advantages r_ij - b_ij, the mean baseline).
    """
    if rewards.numel() % k:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of k={k} replies per prompt")
    b = rloo_baseline(rewards.view(-1, k)).view(-1)
    return rewards - b, float(b.mean())


def advantage_stats(advantages: torch.Tensor) -> dict:
    """What the advantages of one batch look like.

    Args:
        advantages: (batch,) A = r - b.
    Returns:
        mean(A); E[A^2], the scale of the gradient estimate's terms, which includes the lag of an EMA
        baseline ((mean r - b)^2 = mean(A)^2); and the within-batch variance and std, which leave the lag
        out. All are means over the batch's n rows (the variance divides by n, not n - 1), so that
        E[A^2] = mean(A)^2 + var(A) holds exactly, batch by batch.
    """
    a = advantages.double()
    return {"advantage/mean": float(a.mean()), "advantage/sq_mean": float((a ** 2).mean()),
            "advantage/std": float(a.std(correction=0)), "advantage/var": float(a.var(correction=0))}
