"""The REINFORCE loop, read top to bottom: sample, score, log-probs, KL, advantage, step, log.

The math it calls is in `baselines` (EMA and leave-one-out advantages), `losses`
(`reinforce_loss`, `kl_penalized_rewards`) and `logprobs` (the nucleus the replies were sampled
from); sampling is `rollout.sample`. The history names its metrics in the scheme both loops
share: "step", then "<group>/<name>" (HISTORY_KEYS): the training reward, the baseline and
advantages (mean(A), E[A^2], std and variance within the batch), the KL to the SFT model (None
where not measured), reply length and share of replies that closed their turn, the policy's
entropy, the optimizer's learning rate and gradient norm (None: an fp16 step the loss scaler
skipped), and the time of each part.

The plumbing is elsewhere, named: `distributed` (each process's share of the prompts, the rows of
all processes), `checkpoint` (resuming, past the prompt batches already trained; saving) and
`precision` (autocast, the fp16 loss scaler, the guards against non-finite numbers).
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import checkpoint, config, distributed, precision, rollout, tracking
from .baselines import advantage_stats, ema_advantages, rloo_advantages
from .logprobs import entropy_from_logits, masked_sum, token_logprobs
from .losses import kl_penalized_rewards, reinforce_loss

HISTORY_KEYS = ("step", "train/loss", "reward/mean", "reward/std", "advantage/baseline", "advantage/mean",
                "advantage/sq_mean", "advantage/std", "advantage/var", "kl/to_sft", "response/length",
                "response/ended_frac", "policy/entropy", "optim/lr", "optim/grad_norm", "time/step",
                "time/generate", "time/score", "time/backward")


BASELINES = ("ema", "rloo", "none")  # "none": A = r, the plain REINFORCE estimator (what a baseline is for)


def prompt_stream(prompts: list, batch: int, seed: int):
    """Endless batches of prompts: a fresh shuffle each pass over the prompt pool (of at least `batch` prompts)."""
    if not 0 < batch <= len(prompts):
        raise ValueError(f"batches of {batch} prompts cannot be drawn from {len(prompts)} prompts: use a batch of at "
                         f"most {len(prompts)} or more prompts")
    rng = random.Random(seed)
    while True:
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for i in range(0, len(order) - batch + 1, batch):
            yield [prompts[j] for j in order[i:i + batch]]


def check_settings(cfg, ref_policy, processes: int = 1) -> None:
    """Refuse settings the loop cannot run, with what to change."""
    if cfg.prompts_per_iter % processes:
        raise ValueError(f"prompts_per_iter={cfg.prompts_per_iter} does not split evenly over {processes} "
                         "processes; make it a multiple of the number of processes")
    if cfg.baseline not in BASELINES:
        raise ValueError(f"unknown baseline {cfg.baseline!r}; use one of {', '.join(map(repr, BASELINES))}")
    if cfg.baseline == "rloo" and cfg.samples_per_prompt < 2:
        raise ValueError("RLOO needs samples_per_prompt >= 2")
    if cfg.kl_beta > 0 and ref_policy is None:
        raise ValueError("kl_beta > 0 needs the frozen SFT model as ref_policy")


def train_reinforce(policy, tokenizer, reward_fn, prompts: list, cfg, ref_policy=None, progress: bool = True,
                    checkpoint_dir=None, checkpoint_every: int = config.REINFORCE_CHECKPOINT_EVERY,
                    run_name: str | None = None) -> dict:
    """Fine-tune `policy` in place with REINFORCE; returns the per-iteration history (HISTORY_KEYS).

    Args:
        policy: causal LM, fully fine-tuned.
        reward_fn: (prompts, reply_texts) -> (batch,) rewards; e.g. `scoring.RewardScorer.score`.
        prompts: pool of chat prompts (lists of messages) to sample from.
        cfg: `ReinforceConfig`. The prompt order and each iteration's sampling are seeded from
            `cfg.seed`; the loop does not reseed the global RNGs: the caller seeds the run once (runs.py).
        ref_policy: frozen SFT model; needed when cfg.kl_beta > 0, and used to log the KL
            every `cfg.kl_log_every` iterations otherwise (None: KL not measured).
        checkpoint_dir: where the state is saved every `checkpoint_every` iterations and at the end, and
            each iteration's row logged (`train_log.jsonl`); a run that finds a checkpoint of the same
            settings there continues it, also to more iterations than it had (it extends that run).
        run_name: the project name under which the experiment tracker ``$ALIGNLIB_TRACKER`` names,
            if any, logs each iteration (see `tracking`; default "reinforce").

    Under `accelerate launch` with N processes, each process samples, scores and differentiates its
    N-th of each iteration's prompts; the advantages are computed over all processes' rows (one EMA
    baseline; RLOO groups stay on one process) and DDP averages the gradients: one process's update
    with all the prompts, up to float rounding. Only the main process writes checkpoints.
    """
    # the caller placed the models (machine.device()); a tracker asked for but not installed fails here
    accelerator = Accelerator(device_placement=False, **tracking.tracker_from_env())
    rank, world = accelerator.process_index, accelerator.num_processes
    check_settings(cfg, ref_policy, world)
    device, amp, k = next(policy.parameters()).device, cfg.amp, cfg.samples_per_prompt
    model = accelerator.prepare(policy)  # DDP under the launcher; `policy` itself samples and is saved
    # fused: one kernel over all parameters, several times faster on CPU than per-tensor ops (TRL's default too)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, fused=True)
    scaler = precision.grad_scaler(amp, device)  # fp16 only: dynamic loss scaling
    # without `iterations`: the learning rate is constant, so a finished run can be extended by asking for more
    fingerprint = checkpoint.fingerprint(cfg, n_prompts=len(prompts), with_ref=ref_policy is not None) | {"iterations": None}
    start, saved = checkpoint.resume(checkpoint_dir, fingerprint, policy, opt, "REINFORCE at iteration",
                                     last_step=cfg.iterations, scaler=scaler)
    baseline, history = saved.get("baseline"), saved.get("history") or {key: [] for key in HISTORY_KEYS}
    stream = checkpoint.fast_forward(prompt_stream(prompts, cfg.prompts_per_iter, cfg.seed), start)
    every = lambda x: distributed.gather(accelerator, x, device)  # all processes' rows, in order (one process: x)
    tracking.start_run(accelerator, run_name or "reinforce", cfg, checkpoint_dir, history)
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations,
               desc=f"REINFORCE ({cfg.baseline})", disable=not (progress and accelerator.is_main_process))
    for it in bar:
        t0 = time.perf_counter()
        where = f"at iteration {it} (last good checkpoint, if any: {checkpoint_dir})"
        # this process's share of the iteration's prompts, k replies per prompt, adjacent (RLOO's groups)
        batch_prompts = [p for p in distributed.share(next(stream), rank, world) for _ in range(k)]

        # 1. sample replies from the current policy
        policy.eval()
        roll = rollout.sample(policy, tokenizer, batch_prompts, cfg.max_new_tokens, cfg.top_p, cfg.temperature,
                              seed=config.iteration_seed(cfg.seed, it), max_prompt_tokens=cfg.max_prompt_tokens,
                              amp=amp, shard=(rank, world))
        t1 = time.perf_counter()

        # 2. score them
        rewards = score(reward_fn, batch_prompts, roll, cfg.truncation_penalty, where)
        t2 = time.perf_counter()

        # 3. log-probs of the sampled replies under the distribution they were sampled from, with gradients
        model.train()
        with precision.autocast(amp, device):
            logits = rollout.rollout_logits(model, roll)
        seq_logp, entropy = reply_logprobs(logits, roll, cfg.top_p, cfg.temperature)

        # 4. KL to the SFT model (penalty when beta > 0; otherwise only measured now and then)
        shaped, kl = (kl_shaped_rewards(rewards, logits, ref_policy, roll, cfg.kl_beta, amp)
                      if measures_kl(cfg, it, ref_policy is not None) else (rewards, None))

        # 5. advantages over all processes' rows, in order: reward minus a baseline that did not see the reply
        all_advantages, b, baseline = advantages(every(shaped), baseline, cfg)

        # 6. policy-gradient step on this process's rows (DDP averages the gradients; grad_norm None: fp16 skip)
        loss = reinforce_loss(seq_logp, distributed.share(all_advantages, rank, world).to(device))
        precision.backward(loss, scaler, "policy loss", where)
        grad_norm = precision.optimizer_step(opt, scaler, list(model.parameters()), cfg.max_grad_norm, where,
                                             clip=accelerator.clip_grad_norm_)
        t3 = time.perf_counter()

        # 7. log (over all processes' rows)
        row = iteration_row(it + 1, distributed.mean(accelerator, loss), every(rewards), b, all_advantages,
                            None if kl is None else every(kl), every(roll.lengths.float()), every(roll.ended.float()),
                            every(entropy), opt.param_groups[0]["lr"], grad_norm, (t0, t1, t2, t3))
        for key in HISTORY_KEYS:
            history[key].append(row[key])
        tracking.log_step(accelerator, row, checkpoint_dir)
        precision.raise_if_stuck(history["optim/grad_norm"], where)
        bar.set_postfix(progress_summary(row))
        checkpoint.save_if_due(checkpoint_dir, it + 1, checkpoint_every, cfg.iterations, fingerprint, policy, opt,
                               {"baseline": baseline, "history": history, "scaler": scaler.state_dict()}, accelerator)
    tracking.end_run(accelerator)
    policy.eval()
    return history


def score(reward_fn, prompts: list, roll: rollout.Rollout, truncation_penalty: float, where: str) -> torch.Tensor:
    """(batch,) float32 rewards of the sampled replies: reward_fn's, minus `truncation_penalty` for
    each reply cut off at the token cap (it never closed its turn). A non-finite reward stops the run."""
    rewards = torch.as_tensor(reward_fn(prompts, roll.texts), dtype=torch.float32)
    precision.check_finite(rewards, "reward", where)
    return rewards - truncation_penalty * (~roll.ended).float()


def reply_logprobs(logits: torch.Tensor, roll: rollout.Rollout, top_p: float,
                   temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each reply's log-probability and entropy, over its own tokens only (`roll.resp_mask`: up to
    and including its end-of-turn; what follows a reply's end never counts).

    Args:
        logits: (batch, resp_len, vocab) the policy's logits that predict `roll.reply_ids`.
    Returns:
        ((batch,) log pi(y) under the distribution the reply was sampled from (temperature, nucleus),
        with gradients; (batch,) the entropy of the policy's unfiltered softmax, summed over the
        reply's tokens, without).
    """
    mask, targets = roll.resp_mask.to(logits.device), roll.reply_ids.to(logits.device)
    seq_logp = masked_sum(token_logprobs(logits, targets, top_p, temperature), mask)
    with torch.no_grad():
        entropy = masked_sum(entropy_from_logits(logits.detach()), mask)
    return seq_logp, entropy


def measures_kl(cfg, it: int, has_ref: bool) -> bool:
    """Whether iteration `it` measures the KL to the SFT model: at every iteration under a penalty
    (kl_beta > 0), else every `kl_log_every` iterations and at the last; never without the SFT model."""
    return has_ref and (cfg.kl_beta > 0 or it % cfg.kl_log_every == 0 or it == cfg.iterations - 1)


def kl_shaped_rewards(rewards: torch.Tensor, logits: torch.Tensor, ref_policy, roll: rollout.Rollout, beta: float,
                      amp: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The rewards minus beta times each reply's KL estimate to the SFT model (no gradient).

    Args:
        rewards: (batch,) on the CPU.
        logits: (batch, resp_len, vocab) the policy's logits that predict `roll.reply_ids`.
    Returns:
        ((batch,) shaped rewards, on the CPU; (batch,) KL estimates: the sum over each reply's own
        tokens of log pi(y_t) - log pi_sft(y_t), under the unfiltered softmax of both models).
    """
    device = logits.device
    mask, targets = roll.resp_mask.to(device), roll.reply_ids.to(device)
    with torch.no_grad():
        logp = token_logprobs(logits.detach(), targets)
        with precision.autocast(amp, device):
            ref_logp = token_logprobs(rollout.rollout_logits(ref_policy, roll), targets)
    shaped, kl = kl_penalized_rewards(rewards.to(device), logp, ref_logp, mask, beta)
    return shaped.cpu(), kl


def advantages(rewards: torch.Tensor, ema: float | None, cfg) -> tuple[torch.Tensor, float, float | None]:
    """The advantages of cfg.baseline: (rows,) rewards of all processes' replies, in order, and the EMA
    baseline before them -> ((rows,) advantages, the baseline logged, the EMA baseline after them
    (RLOO and none: `ema` unchanged)). Without a baseline ("none") the advantage is the reward itself."""
    if cfg.baseline == "ema":
        return ema_advantages(rewards, ema, cfg.ema_alpha)
    if cfg.baseline == "none":
        return rewards.clone(), 0.0, ema
    adv, b = rloo_advantages(rewards, cfg.samples_per_prompt)
    return adv, b, ema


def iteration_row(step: int, loss: float, rewards, baseline: float, advantages, kl, lengths, ended, entropy,
                  lr: float, grad_norm: float | None, times: tuple) -> dict:
    """One iteration's row of the history (HISTORY_KEYS), from its values over all processes' replies.

    Args:
        rewards, advantages, lengths, ended, entropy: (rows,) per reply: the reward before the KL
            penalty, the advantage, the length in tokens, 1.0 where it closed its turn, and the
            policy's entropy summed over its tokens.
        kl: (rows,) the KL estimate of each reply, or None (not measured).
        times: perf_counter at the start, after sampling, after scoring, after the step.
    """
    t0, t1, t2, t3 = times
    return {"step": step, "train/loss": loss, "reward/mean": float(rewards.mean()),
            "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0, "advantage/baseline": baseline,
            **advantage_stats(advantages), "kl/to_sft": float(kl.mean()) if kl is not None else None,
            "response/length": float(lengths.mean()), "response/ended_frac": float(ended.mean()),
            "policy/entropy": float(entropy.sum() / lengths.sum().clamp(min=1)),  # per reply token
            "optim/lr": lr, "optim/grad_norm": grad_norm, "time/step": t3 - t0,
            "time/generate": t1 - t0, "time/score": t2 - t1, "time/backward": t3 - t2}


def progress_summary(row: dict) -> dict:
    """What the progress bar shows of an iteration's row: reward, reply length, KL ("-": not measured), seconds."""
    kl = row["kl/to_sft"]
    return {"reward": f"{row['reward/mean']:.3f}", "len": f"{row['response/length']:.0f}",
            "kl": "-" if kl is None else f"{kl:.2f}", "s_it": f"{row['time/step']:.1f}"}


def summarize_history(history: dict, last: int = 10) -> dict:
    """Means of the logged quantities over the whole run and over the last iterations (record metrics)."""
    out = {"iterations": len(history["step"]),
           "sec_per_iter": float(np.mean(history["time/step"])),
           "advantage_var": float(np.mean(history["advantage/var"])),
           "advantage_sq_mean": float(np.mean(history["advantage/sq_mean"])),
           "advantage_mean": float(np.mean(history["advantage/mean"])),
           "skipped_steps": precision.skipped_steps(history["optim/grad_norm"]),
           "train_reward_first": float(np.mean(history["reward/mean"][:last])),
           "train_reward_last": float(np.mean(history["reward/mean"][-last:]))}
    for part in ("generate", "score", "backward"):
        out[f"sec_{part}_per_iter"] = float(np.mean(history[f"time/{part}"]))
    return out
