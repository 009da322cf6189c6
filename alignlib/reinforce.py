"""REINFORCE on a chat policy against a reward model: baselines, loss, and the loop.

The policy-gradient theorem for one reply y to a prompt x:

    grad E_y[r(x, y)] = E_y[(r(x, y) - b) * grad log pi(y | x)],   log pi(y | x) = sum_t log pi(y_t | x, y_<t)

for any baseline b that does not depend on y. The baselines here:
- EMA: b_t = alpha * b_{t-1} + (1 - alpha) * mean(r_t), used BEFORE it sees the current batch;
- leave-one-out (RLOO): k replies per prompt, each judged against the mean of the other k - 1.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from . import precision, results, rollout

# ------------------------------------------------------------------ pure tensor functions


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


def kl_penalized_rewards(rewards: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                         mask: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """r - beta * sum_t (log pi(y_t) - log pi_ref(y_t)) over the reply tokens.

    Args:
        rewards: (batch,) reward-model scores.
        logp, ref_logp: (batch, len) token log-probs of the policy and the frozen SFT model.
        mask: (batch, len) reply tokens.
    Returns:
        ((batch,) penalised rewards, (batch,) per-reply KL estimates).
    """
    kl = rollout.masked_sum(logp - ref_logp, mask)
    return rewards - beta * kl, kl


def reinforce_loss(seq_logp: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """-mean(A * log pi(y)): its gradient is the REINFORCE estimate (advantages are constants).

    Args:
        seq_logp: (batch,) summed log-probs of each reply (with gradient).
        advantages: (batch,) r - b.
    """
    return -(advantages.detach() * seq_logp).mean()


# ------------------------------------------------------------------------------ loop


def prompt_stream(prompts: list, batch: int, seed: int):
    """Endless batches of prompts: a fresh shuffle each pass over the prompt pool."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for i in range(0, len(order) - batch + 1, batch):
            yield [prompts[j] for j in order[i:i + batch]]


def train_reinforce(policy, tokenizer, reward_fn, prompts: list, cfg, ref_policy=None,
                    progress: bool = True, checkpoint_dir=None, checkpoint_every: int = 20) -> dict:
    """Fine-tune `policy` in place with REINFORCE; returns the per-iteration history.

    Args:
        policy: causal LM, fully fine-tuned.
        reward_fn: (prompts, reply_texts) -> (batch,) rewards; e.g. `RewardScorer.score`.
        prompts: pool of chat prompts (lists of messages) to sample from.
        cfg: `ReinforceConfig`.
        ref_policy: frozen SFT model; needed when cfg.kl_beta > 0, and used to log the KL
            every `cfg.kl_log_every` iterations otherwise (None: KL not measured).
        checkpoint_dir: where to save the state every `checkpoint_every` iterations and at the
            end; a run that finds a checkpoint of the same settings there continues from it.
    """
    from . import checkpoint

    if cfg.baseline not in ("ema", "rloo"):
        raise ValueError(f"unknown baseline {cfg.baseline!r}; use 'ema' or 'rloo'")
    if cfg.baseline == "rloo" and cfg.samples_per_prompt < 2:
        raise ValueError("RLOO needs samples_per_prompt >= 2")
    if cfg.kl_beta > 0 and ref_policy is None:
        raise ValueError("kl_beta > 0 needs the frozen SFT model as ref_policy")
    device, amp = next(policy.parameters()).device, cfg.amp
    results.seed_everything(cfg.seed)
    # fused: one kernel over all 135M parameters instead of a loop of per-tensor ops (several times
    # faster on CPU; TRL's default optimizer too). Same update up to float rounding.
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=0.0, fused=True)
    scaler = precision.grad_scaler(amp, device)  # fp16 only: dynamic loss scaling
    stream = prompt_stream(prompts, cfg.prompts_per_iter, cfg.seed)
    k = cfg.samples_per_prompt
    baseline, start = None, 0
    keys = ("reward/mean", "reward/std", "baseline", "advantage/std", "advantage/var", "kl/to_sft",
            "response/length", "response/ended_frac", "entropy", "grad_norm", "loss", "time/iteration",
            "time/generate", "time/score", "time/backward")
    history = {key: [] for key in keys}
    history["iteration"] = []
    fingerprint = checkpoint.fingerprint(cfg, n_prompts=len(prompts), with_ref=ref_policy is not None)
    if checkpoint_dir is not None:
        resumed = checkpoint.load(checkpoint_dir, fingerprint, policy, opt)
        if resumed is not None:
            start, extra = resumed
            baseline, history = extra["baseline"], extra["history"]
            if "scaler" in extra:  # checkpoints written before fp16 support carry none
                scaler.load_state_dict(extra["scaler"])
            for _ in range(start):  # the prompt batches the interrupted run already used
                next(stream)
            print(f"[alignlib] resuming REINFORCE at iteration {start} from {checkpoint_dir}")
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations,
               desc=f"REINFORCE ({cfg.baseline})", disable=not progress)
    for it in bar:
        t0 = time.perf_counter()
        batch_prompts = [p for p in next(stream) for _ in range(k)]  # k replies per prompt, adjacent

        # 1. sample replies from the current policy
        policy.eval()
        roll = rollout.sample(policy, tokenizer, batch_prompts, cfg.max_new_tokens, cfg.top_p, cfg.temperature,
                              seed=cfg.seed * 100_003 + it, max_prompt_tokens=cfg.max_prompt_tokens, amp=amp)
        t1 = time.perf_counter()

        # 2. score them
        rewards = torch.as_tensor(reward_fn(batch_prompts, roll.texts), dtype=torch.float32)
        if not torch.isfinite(rewards).all():
            raise FloatingPointError(f"non-finite reward at iteration {it}; the last good checkpoint (if any) "
                                     f"is in {checkpoint_dir}")
        rewards = rewards - cfg.truncation_penalty * (~roll.ended).float()
        t2 = time.perf_counter()

        # 3. log-probs of the sampled replies, one forward pass with gradients
        policy.train()
        mask = roll.resp_mask.to(device)
        with precision.autocast(amp, device):
            logits = rollout.rollout_logits(policy, roll)
        targets = roll.input_ids[:, -roll.resp_len:].to(device)
        sampled_from = logits / cfg.temperature if cfg.temperature != 1.0 else logits  # as NucleusWarper
        logp_nucleus = rollout.token_logprobs(sampled_from, targets, cfg.top_p)
        seq_logp = rollout.masked_sum(logp_nucleus, mask)
        with torch.no_grad():
            entropy = rollout.masked_mean(rollout.entropy_from_logits(logits.detach()), mask)

        # 4. KL to the SFT model (penalty when beta > 0; otherwise only measured now and then)
        kl = None
        if ref_policy is not None and (cfg.kl_beta > 0 or it % cfg.kl_log_every == 0 or it == cfg.iterations - 1):
            with torch.no_grad():
                logp_full = rollout.token_logprobs(logits.detach(), targets)
                with precision.autocast(amp, device):
                    ref_logp = rollout.token_logprobs(rollout.rollout_logits(ref_policy, roll), targets)
            shaped, kl = kl_penalized_rewards(rewards.to(device), logp_full, ref_logp, mask, cfg.kl_beta)
            shaped = shaped.cpu()
        else:
            shaped = rewards

        # 5. advantages: reward minus a baseline that did not see this reply
        if cfg.baseline == "ema":
            b = baseline if baseline is not None else float(shaped.mean())
            advantages = shaped - b
            baseline = ema_baseline(baseline, shaped, cfg.ema_alpha)
        else:
            b_ij = rloo_baseline(shaped.view(-1, k)).view(-1)
            b = float(b_ij.mean())
            advantages = shaped - b_ij

        # 6. policy-gradient step (grad_norm None: an fp16 step the loss scaler skipped)
        loss = reinforce_loss(seq_logp, advantages.to(device))
        where = f"at iteration {it} (last good checkpoint, if any: {checkpoint_dir})"
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite policy loss {where}")
        scaler.scale(loss).backward()
        grad_norm = precision.clip_and_step(opt, scaler, list(policy.parameters()), cfg.max_grad_norm, where)
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()

        # 7. log
        row = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()), "baseline": b,
               "advantage/std": float(advantages.std()), "advantage/var": float(advantages.var()),
               "kl/to_sft": float(kl.mean()) if kl is not None else None,
               "response/length": float(roll.lengths.float().mean()),
               "response/ended_frac": float(roll.ended.float().mean()), "entropy": float(entropy),
               "grad_norm": grad_norm, "loss": float(loss.detach()), "time/iteration": t3 - t0,
               "time/generate": t1 - t0, "time/score": t2 - t1, "time/backward": t3 - t2}
        for key in keys:
            history[key].append(row[key])
        history["iteration"].append(it + 1)
        precision.raise_if_stuck(history["grad_norm"], where)
        bar.set_postfix(reward=f"{row['reward/mean']:.3f}", len=f"{row['response/length']:.0f}",
                        kl="-" if kl is None else f"{row['kl/to_sft']:.2f}", s_it=f"{row['time/iteration']:.1f}")
        if checkpoint_dir is not None and ((it + 1) % checkpoint_every == 0 or it + 1 == cfg.iterations):
            checkpoint.save(checkpoint_dir, it + 1, fingerprint, policy, opt,
                            {"baseline": baseline, "history": history, "scaler": scaler.state_dict()})
    policy.eval()
    return history


def summarize_history(history: dict, last: int = 10) -> dict:
    """Means of the logged quantities over the whole run and over the last iterations."""
    out = {"iterations": len(history["iteration"]),
           "sec_per_iter": float(np.mean(history["time/iteration"])),
           "advantage_var": float(np.mean(history["advantage/var"])),
           "skipped_steps": precision.skipped_steps(history["grad_norm"]),
           "train_reward_first": float(np.mean(history["reward/mean"][:last])),
           "train_reward_last": float(np.mean(history["reward/mean"][-last:]))}
    for part in ("generate", "score", "backward"):
        out[f"sec_{part}_per_iter"] = float(np.mean(history[f"time/{part}"]))
    return out
