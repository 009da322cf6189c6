"""Small, fast versions of the lesson for notebook 03: a two-armed bandit and a reward a learner can read.

- `bandit`: REINFORCE on a softmax over two actions, with the course's own baselines and loss
  (`baselines`, `losses`). It runs in a fraction of a second, so the effect of a baseline, of EMA
  against leave-one-out and of a KL weight can be seen before spending minutes on the real model.
- `positive_word_reward`: 10 x the share of a reply's words found in `POSITIVE_WORDS`. A dense rule the
  policy can climb within a few iterations on a CPU, unlike the trained reward model, whose gain over
  a few iterations stays within its noise.
"""

from __future__ import annotations

import re

import torch

from .baselines import ema_advantages, rloo_advantages
from .losses import reinforce_loss

POSITIVE_WORDS = frozenset(
    "good great happy glad love lovely wonderful excellent amazing awesome fantastic beautiful best nice "
    "enjoy enjoyable fun joy delightful positive kind helpful thank thanks welcome pleased brilliant".split())


def positive_word_reward(prompts: list, texts: list[str]) -> torch.Tensor:
    """(len(texts),) 10 x the share of each reply's words that are in `POSITIVE_WORDS` (0 for an empty reply).

    The prompts are not used: a rule about the reply alone. Its scale (0 to 10) is the reward models'."""
    scores = []
    for text in texts:
        words = re.findall(r"[a-z']+", text.lower())
        scores.append(10.0 * sum(w in POSITIVE_WORDS for w in words) / max(len(words), 1))
    return torch.tensor(scores)


def bandit(baseline: str = "ema", steps: int = 150, batch: int = 8, lr: float = 0.5, rewards=(11.0, 10.0),
           noise: float = 1.0, alpha: float = 0.9, k: int = 2, beta: float = 0.0, start=(-1.0, 1.0),
           seed: int = 0) -> dict:
    """REINFORCE on a two-armed bandit: a policy softmax(theta) over actions 0 (the better one) and 1.

    Each step samples `batch` actions, pays rewards[a] + N(0, noise^2), and takes one SGD step on
    `losses.reinforce_loss` with the advantages of `baseline`: "none" (A = r), "ema"
    (`baselines.ema_advantages`) or "rloo" (`baselines.rloo_advantages`, groups of k). With `beta` > 0
    the reward pays beta x (log pi(a) - log pi_ref(a)), pi_ref the starting policy: the KL penalty.

    Returns {"p_good": (steps + 1,) P(action 0) before each step and after the last,
    "grad_var": (steps,) variance over the batch of the per-sample estimates of d J / d theta_0,
    "sq_adv": (steps,) E[A^2] of each batch}.
    """
    if baseline not in ("none", "ema", "rloo"):
        raise ValueError(f"unknown baseline {baseline!r}; use 'none', 'ema' or 'rloo'")
    if baseline == "rloo" and batch % k:
        raise ValueError(f"batch={batch} does not split into groups of k={k}")
    gen = torch.Generator().manual_seed(seed)
    theta = torch.tensor(start, requires_grad=True)
    ref_logp = torch.log_softmax(theta.detach(), -1)
    opt = torch.optim.SGD([theta], lr=lr)
    pay, ema = torch.tensor(rewards), None
    out = {"p_good": [], "grad_var": [], "sq_adv": []}
    for _ in range(steps):
        logp = torch.log_softmax(theta, -1)
        out["p_good"].append(float(logp[0].detach().exp()))
        actions = torch.multinomial(logp.exp().detach(), batch, replacement=True, generator=gen)
        r = pay[actions] + noise * torch.randn(batch, generator=gen)
        r = r - beta * (logp.detach() - ref_logp)[actions]
        if baseline == "none":
            adv = r
        elif baseline == "ema":
            adv, _, ema = ema_advantages(r, ema, alpha)
        else:
            adv, _ = rloo_advantages(r, k)
        score = (actions == 0).float() - logp[0].exp().detach()  # d log pi(a) / d theta_0 of a softmax
        out["grad_var"].append(float((adv * score).var()))
        out["sq_adv"].append(float((adv ** 2).mean()))
        opt.zero_grad()
        reinforce_loss(logp[actions], adv).backward()
        opt.step()
    out["p_good"].append(float(torch.softmax(theta.detach(), -1)[0]))
    return out
