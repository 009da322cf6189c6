"""The losses of the lesson, as pure tensor functions (written by hand on purpose)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    s_chosen: torch.Tensor, s_rejected: torch.Tensor, margin: float = 0.0, center_coef: float = 0.0
) -> torch.Tensor:
    """Negative log-likelihood of the preferences under the Bradley-Terry model.

    P(chosen > rejected) = sigmoid(s_c - s_r), so the loss is -log sigmoid(s_c - s_r - margin),
    computed with logsigmoid (no overflow for large gaps), averaged over the batch.

    Args:
        s_chosen: (batch,) scalar rewards of the chosen responses.
        s_rejected: (batch,) scalar rewards of the rejected responses.
        margin: required gap (0 = the original loss).
        center_coef: c of the reward-centering term c * mean((s_c + s_r)^2) that keeps rewards
            near zero (0 = off, as in the original setup).
    Returns:
        () mean loss.
    """
    loss = -F.logsigmoid(s_chosen - s_rejected - margin).mean()
    if center_coef:
        loss = loss + center_coef * ((s_chosen + s_rejected) ** 2).mean()
    return loss
