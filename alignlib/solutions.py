"""Reference solutions of the notebook exercises (`alignlib.exercises` checks a learner's version against them).

One small tensor function per exercise, in the conventions of the library: `losses` (Bradley-Terry, REINFORCE,
KL penalty), `baselines` (EMA and leave-one-out), `logprobs` (a reply is its tokens up to and including the first
end-of-turn), `reinforce_loop.score` (the truncation penalty) and `scoring.RewardScorer.sample` (scores 1..10).
`exercises.solution(name)` prints one of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor) -> torch.Tensor:
    """(n,) rewards of the chosen replies, (n,) of the rejected ones -> () mean of -log sigmoid(s_c - s_r).

    logsigmoid stays finite for any gap; log(sigmoid(d)) underflows to log(0) = -inf for d around -100 and below.
    """
    return -F.logsigmoid(s_chosen - s_rejected).mean()


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 attention mask -> (B,) long index of each row's last real token, left or right padding.

    Flipped, the last 1 of a row is its first 1, which argmax finds (argmax returns the first maximum).
    """
    T = attention_mask.shape[1]
    return T - 1 - attention_mask.flip(1).argmax(1)


def ema_step(rewards: torch.Tensor, baseline: float | None, alpha: float) -> tuple[torch.Tensor, float]:
    """One batch of REINFORCE with an exponential-moving-average baseline.

    Args:
        rewards: (n,) rewards of this batch.
        baseline: the EMA after the previous batches; None at the first batch.
        alpha: weight kept on the previous baseline.
    Returns:
        ((n,) advantages r - b against the baseline of the PREVIOUS batches (at the first batch, with no
        history, the batch's mean), the EMA after this batch: alpha * b + (1 - alpha) * mean(r), or the mean
        at the first batch).
    """
    mean = float(rewards.mean())
    if baseline is None:
        return rewards - mean, mean
    return rewards - baseline, alpha * baseline + (1 - alpha) * mean


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(n_prompts, k) rewards of k >= 2 replies per prompt -> (n_prompts, k) r_ij - mean of the other k - 1
    replies of prompt i."""
    k = rewards.shape[1]
    others = (rewards.sum(1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


def sequence_logprob(token_logp: torch.Tensor, tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) token log-probs, (B, T) reply tokens -> (B,) log-prob of each reply.

    A reply is its tokens up to AND including its first eos (ending the turn is a choice the model learns);
    what follows is padding, whatever its ids. A reply without eos (cut at the token cap) counts all T tokens.
    """
    is_eos = (tokens == eos_id).long()
    eos_before = is_eos.cumsum(1) - is_eos  # eos strictly before each position
    return (token_logp * (eos_before == 0)).sum(1)


def reinforce_loss(seq_logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """(N,) log pi(y) with gradient, (N,) advantages -> () -mean(A * log pi(y)), the advantages as constants."""
    return -(advantages.detach() * seq_logp).mean()


def score_function_gradients(actions: torch.Tensor, p_good: float, rewards: torch.Tensor,
                             baseline: float) -> torch.Tensor:
    """Per-sample REINFORCE estimates of dJ/dlogit_0 for a two-armed softmax bandit.

    Args:
        actions: (n,) long, 0 = the good arm, 1 = the other.
        p_good: softmax probability of arm 0.
        rewards: (n,) reward of each pull.
        baseline: b, subtracted from every reward.
    Returns:
        (n,) (r - b) * dlog pi(a)/dlogit_0 = (r - b) * (1[a=0] - p_good).
    """
    score = (actions == 0).float() - p_good
    return (rewards - baseline) * score


def kl_penalised_rewards(rewards: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                         beta: float) -> torch.Tensor:
    """(B,) rewards, (B, T) token log-probs of the policy and of the reference, (B, T) 0/1 reply mask
    -> (B,) r - beta * sum_t mask * (logp - ref_logp)."""
    kl = (mask * (logp - ref_logp)).sum(1)
    return rewards - beta * kl


def truncation_penalised(rewards: torch.Tensor, ended: torch.Tensor, penalty: float) -> torch.Tensor:
    """(B,) rewards, (B,) bool whether each reply ended its turn -> (B,) rewards minus `penalty` for the replies
    that did NOT end (cut off at the token cap)."""
    return rewards - penalty * (~ended).float()


def length_normalised_logprob(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) token log-probs, (B, T) 0/1 mask of the real tokens -> (B,) mean log-prob per real token."""
    return (token_logp * mask).sum(1) / mask.sum(1)


def sampled_reward(probs: torch.Tensor, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 10) probabilities over the scores 1..10 -> (N,) float mean of m scores drawn from each row.

    Column i holds the score i + 1; the draws are independent (with replacement).
    """
    idx = torch.multinomial(probs, m, replacement=True, generator=generator)  # (N, m) in 0..9
    return (idx + 1).float().mean(1)


def centring_term(s_chosen: torch.Tensor, s_rejected: torch.Tensor, coef: float) -> torch.Tensor:
    """(n,), (n,) rewards -> () coef * mean((s_c + s_r)^2): pulls each pair's rewards towards zero, leaving
    their gap (what Bradley-Terry learns) free."""
    return coef * ((s_chosen + s_rejected) ** 2).mean()
