"""The losses of the lesson, as pure tensor functions (written by hand on purpose): the reward
models' pairwise losses and the REINFORCE surrogate with its KL penalty."""

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


def expected_score(logits: torch.Tensor) -> torch.Tensor:
    """E[p] = sum_i i * p_i with p = softmax(logits) over the scores 1..n.

    Args:
        logits: (..., n) head outputs, the scores on the last axis (e.g. (batch, n)).
    Returns:
        (...) expected score, between 1 and n.
    """
    scores = torch.arange(1, logits.shape[-1] + 1, dtype=logits.dtype, device=logits.device)
    return (logits.softmax(-1) * scores).sum(-1)


def expected_score_loss(logits_chosen: torch.Tensor, logits_rejected: torch.Tensor) -> torch.Tensor:
    """The original probabilistic-RM loss: Bradley-Terry on the expected scores.

    Args:
        logits_chosen, logits_rejected: (batch, n) head outputs over the scores 1..n.
    Returns:
        () mean of -log sigmoid(E[p_c] - E[p_r]).
    """
    return bradley_terry_loss(expected_score(logits_chosen), expected_score(logits_rejected))


def prob_beats(logits_chosen: torch.Tensor, logits_rejected: torch.Tensor) -> torch.Tensor:
    """P(a score drawn for chosen beats one drawn for rejected), ties counted half.

    P = sum_{i>j} p_c(i) p_r(j) + 1/2 sum_i p_c(i) p_r(i). Counting ties half makes two
    identical distributions give exactly 1/2 (chance), as a Bradley-Terry tie does; ignoring
    ties would reward spreading both distributions just to avoid them.

    Args:
        logits_chosen, logits_rejected: (..., n), the scores on the last axis (e.g. (batch, n)).
    Returns:
        (...) probabilities in (0, 1).
    """
    p_c, p_r = logits_chosen.softmax(-1), logits_rejected.softmax(-1)
    below = p_r.cumsum(-1) - p_r  # P(S_r < i) for each score i
    return (p_c * (below + 0.5 * p_r)).sum(-1)


def prob_beats_loss(logits_chosen: torch.Tensor, logits_rejected: torch.Tensor) -> torch.Tensor:
    """() mean of -log P(S_c > S_r) (ties half), see `prob_beats`."""
    return -torch.log(prob_beats(logits_chosen, logits_rejected).clamp(min=1e-12)).mean()


def reward_model_loss(kind: str, logits_chosen: torch.Tensor, logits_rejected: torch.Tensor,
                      margin: float = 0.0, center_coef: float = 0.0) -> torch.Tensor:
    """The reward-model loss called `kind` on head outputs (batch, num_labels) -> () mean loss.

    "bradley_terry" needs a one-output head (margin and center_coef apply to it); "expected_score"
    and "prob_beats" need a distribution head (num_labels > 1).
    """
    if kind == "bradley_terry":
        if logits_chosen.shape[-1] != 1:
            raise ValueError("bradley_terry needs a one-output head (num_labels=1)")
        return bradley_terry_loss(logits_chosen[:, 0], logits_rejected[:, 0], margin, center_coef)
    if kind not in ("expected_score", "prob_beats"):
        raise ValueError(f"unknown reward-model loss {kind!r}; use bradley_terry, expected_score or prob_beats")
    if logits_chosen.shape[-1] < 2:
        raise ValueError(f"loss {kind!r} needs a distribution head (num_labels > 1)")
    loss = expected_score_loss if kind == "expected_score" else prob_beats_loss
    return loss(logits_chosen, logits_rejected)


# ------------------------------------------------------------------------------ REINFORCE


def reinforce_loss(seq_logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean(A * log pi(y)): its gradient is the REINFORCE estimate (advantages are constants).

    Args:
        seq_logp: (batch,) summed log-probs of each reply (with gradient).
        advantages: (batch,) r - b.
    Returns:
        () loss.
    """
    return -(advantages.detach() * seq_logp).mean()


def kl_penalized_rewards(rewards: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                         mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """r - beta * sum_t (log pi(y_t) - log pi_ref(y_t)) over the reply tokens.

    Args:
        rewards: (batch,) reward-model scores.
        logp, ref_logp: (batch, len) token log-probs of the policy and the frozen SFT model.
        mask: (batch, len) 1 on reply tokens.
    Returns:
        ((batch,) penalised rewards, (batch,) per-reply KL estimates).
    """
    kl = ((logp - ref_logp) * mask).sum(-1)
    return rewards - beta * kl, kl
