"""The REINFORCE loop, read top to bottom: sample, score, log-probs, KL, advantage, step, log.

The math it calls is in `baselines` (EMA and leave-one-out advantages), `losses`
(`reinforce_loss`, `kl_penalized_rewards`) and `logprobs` (the nucleus the replies were sampled
from); sampling is `rollout.sample`. The history names its metrics in the scheme both loops
share: "step", then "<group>/<name>" (HISTORY_KEYS): the training reward, the baseline and
advantages (mean(A), E[A^2], std and variance within the batch), the KL to the SFT model (None
where not measured), reply length and share of replies that closed their turn, the policy's
entropy, the optimizer's learning rate and gradient norm (None: an fp16 step the loss scaler
skipped), and the time of each part.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import checkpoint, precision, rollout, tracking
from .baselines import advantage_stats, ema_advantages, rloo_advantages
from .logprobs import entropy_from_logits, masked_sum, token_logprobs
from .losses import kl_penalized_rewards, reinforce_loss

HISTORY_KEYS = ("step", "train/loss", "reward/mean", "reward/std", "advantage/baseline", "advantage/mean",
                "advantage/sq_mean", "advantage/std", "advantage/var", "kl/to_sft", "response/length",
                "response/ended_frac", "policy/entropy", "optim/lr", "optim/grad_norm", "time/step",
                "time/generate", "time/score", "time/backward")


def prompt_stream(prompts: list, batch: int, seed: int):
    """Endless batches of prompts: a fresh shuffle each pass over the prompt pool."""
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
    if cfg.baseline not in ("ema", "rloo"):
        raise ValueError(f"unknown baseline {cfg.baseline!r}; use 'ema' or 'rloo'")
    if cfg.baseline == "rloo" and cfg.samples_per_prompt < 2:
        raise ValueError("RLOO needs samples_per_prompt >= 2")
    if cfg.kl_beta > 0 and ref_policy is None:
        raise ValueError("kl_beta > 0 needs the frozen SFT model as ref_policy")


def train_reinforce(policy, tokenizer, reward_fn, prompts: list, cfg, ref_policy=None,
                    progress: bool = True, checkpoint_dir=None, checkpoint_every: int = 20,
                    run_name: str | None = None) -> dict:
    """Fine-tune `policy` in place with REINFORCE; returns the per-iteration history (HISTORY_KEYS).

    Args:
        policy: causal LM, fully fine-tuned.
        reward_fn: (prompts, reply_texts) -> (batch,) rewards; e.g. `scoring.RewardScorer.score`.
        prompts: pool of chat prompts (lists of messages) to sample from.
        cfg: `ReinforceConfig`. The prompt order and each iteration's sampling are seeded from
            `cfg.seed`; the loop does not reseed the global RNGs (the run does, once: `runs.seed_run`).
        ref_policy: frozen SFT model; needed when cfg.kl_beta > 0, and used to log the KL
            every `cfg.kl_log_every` iterations otherwise (None: KL not measured).
        checkpoint_dir: where to save the state every `checkpoint_every` iterations and at the
            end; a run that finds a checkpoint of the same settings there continues from it, also
            one that asks for more iterations than the checkpointed run did (it extends that run).
            Each iteration's row also goes to `<checkpoint_dir>/train_log.jsonl`.
        run_name: the project name under which the experiment tracker ``$ALIGNLIB_TRACKER`` names,
            if any, logs each iteration (see `tracking`; default "reinforce").

    Under `accelerate launch` with N processes, each process samples, scores and differentiates
    its N-th of every iteration's prompts, the advantages are computed over the rows gathered from
    all processes (one EMA baseline; RLOO groups stay on one process), and the gradients are
    averaged (DDP): the update of one process with all the prompts, up to float rounding. Only the
    main process writes checkpoints. Without the launcher: one process, nothing wrapped.
    """
    # the caller placed the models (models.device()); a tracker asked for but not installed fails here
    accelerator = Accelerator(device_placement=False, **tracking.tracker_from_env())
    rank, world = accelerator.process_index, accelerator.num_processes
    check_settings(cfg, ref_policy, world)
    device, amp, k = next(policy.parameters()).device, cfg.amp, cfg.samples_per_prompt
    model = accelerator.prepare(policy)  # DDP under the launcher; `policy` itself samples and is saved
    # fused: one kernel over all 135M parameters instead of a loop of per-tensor ops (several times
    # faster on CPU; TRL's default optimizer too). Same update up to float rounding.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, fused=True)
    scaler = precision.grad_scaler(amp, device)  # fp16 only: dynamic loss scaling
    stream = prompt_stream(prompts, cfg.prompts_per_iter, cfg.seed)
    baseline, start = None, 0
    history = {key: [] for key in HISTORY_KEYS}
    # without `iterations`: the learning rate is constant, so a finished run can be extended by asking for more
    fingerprint = checkpoint.fingerprint(cfg, n_prompts=len(prompts), with_ref=ref_policy is not None) | {"iterations": None}
    if checkpoint_dir is not None:
        resumed = checkpoint.load(checkpoint_dir, fingerprint, policy, opt, last_step=cfg.iterations)
        if resumed is not None:
            start, extra = resumed
            baseline, history = extra["baseline"], extra["history"]
            scaler.load_state_dict(extra["scaler"])
            for _ in range(start):  # the prompt batches the interrupted run already used
                next(stream)
            print(f"[alignlib] resuming REINFORCE at iteration {start} from {checkpoint_dir}")
    tracking.start_run(accelerator, run_name or "reinforce", cfg, checkpoint_dir, history)
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations,
               desc=f"REINFORCE ({cfg.baseline})", disable=not (progress and accelerator.is_main_process))
    for it in bar:
        t0 = time.perf_counter()
        share = cfg.prompts_per_iter // world  # this process's prompts; k replies per prompt, adjacent
        batch_prompts = [p for p in next(stream)[rank * share:(rank + 1) * share] for _ in range(k)]

        # 1. sample replies from the current policy
        policy.eval()
        roll = rollout.sample(policy, tokenizer, batch_prompts, cfg.max_new_tokens, cfg.top_p, cfg.temperature,
                              seed=cfg.seed * 100_003 + it, max_prompt_tokens=cfg.max_prompt_tokens, amp=amp,
                              shard=(rank, world))
        t1 = time.perf_counter()

        # 2. score them
        rewards = torch.as_tensor(reward_fn(batch_prompts, roll.texts), dtype=torch.float32)
        if not torch.isfinite(rewards).all():
            raise FloatingPointError(f"non-finite reward at iteration {it}; the last good checkpoint (if any) "
                                     f"is in {checkpoint_dir}")
        rewards = rewards - cfg.truncation_penalty * (~roll.ended).float()
        t2 = time.perf_counter()

        # 3. log-probs of the sampled replies under the distribution they were sampled from, with gradients
        model.train()
        mask, targets = roll.resp_mask.to(device), roll.reply_ids.to(device)
        with precision.autocast(amp, device):
            logits = rollout.rollout_logits(model, roll)
        seq_logp = masked_sum(token_logprobs(logits, targets, cfg.top_p, cfg.temperature), mask)
        with torch.no_grad():
            entropy = masked_sum(entropy_from_logits(logits.detach()), mask)  # per reply, summed over tokens

        # 4. KL to the SFT model (penalty when beta > 0; otherwise only measured now and then)
        kl, shaped = None, rewards
        if ref_policy is not None and (cfg.kl_beta > 0 or it % cfg.kl_log_every == 0 or it == cfg.iterations - 1):
            with torch.no_grad():
                logp_full = token_logprobs(logits.detach(), targets)
                with precision.autocast(amp, device):
                    ref_logp = token_logprobs(rollout.rollout_logits(ref_policy, roll), targets)
            shaped, kl = kl_penalized_rewards(rewards.to(device), logp_full, ref_logp, mask, cfg.kl_beta)
            shaped = shaped.cpu()

        # 5. advantages over the iteration's rows from all processes, in order: reward minus a
        #    baseline that did not see this reply
        every = lambda x: accelerator.gather(x.to(device)).cpu()  # noqa: E731  (one process: x itself)
        if cfg.baseline == "ema":
            all_advantages, b, baseline = ema_advantages(every(shaped), baseline, cfg.ema_alpha)
        else:
            all_advantages, b = rloo_advantages(every(shaped), k)
        advantages = all_advantages[rank * len(batch_prompts):(rank + 1) * len(batch_prompts)]

        # 6. policy-gradient step (grad_norm None: an fp16 step the loss scaler skipped)
        loss = reinforce_loss(seq_logp, advantages.to(device))
        where = f"at iteration {it} (last good checkpoint, if any: {checkpoint_dir})"
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite policy loss {where}")
        scaler.scale(loss).backward()  # under DDP, averages the gradients over the processes
        grad_norm = precision.clip_and_step(opt, scaler, list(model.parameters()), cfg.max_grad_norm, where,
                                            clip=accelerator.clip_grad_norm_)
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()

        # 7. log (over all processes' rows)
        rewards, lengths = every(rewards), every(roll.lengths.float())
        row = {"step": it + 1, "train/loss": float(accelerator.reduce(loss.detach(), "mean")),
               "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()) if rewards.numel() > 1 else 0.0,
               "advantage/baseline": b,
               **advantage_stats(all_advantages), "kl/to_sft": float(every(kl).mean()) if kl is not None else None,
               "response/length": float(lengths.mean()), "response/ended_frac": float(every(roll.ended.float()).mean()),
               "policy/entropy": float(every(entropy).sum() / lengths.sum().clamp(min=1)),
               "optim/lr": opt.param_groups[0]["lr"], "optim/grad_norm": grad_norm, "time/step": t3 - t0,
               "time/generate": t1 - t0, "time/score": t2 - t1, "time/backward": t3 - t2}
        for key in HISTORY_KEYS:
            history[key].append(row[key])
        tracking.log_step(accelerator, row, checkpoint_dir)
        precision.raise_if_stuck(history["optim/grad_norm"], where)
        bar.set_postfix(reward=f"{row['reward/mean']:.3f}", len=f"{row['response/length']:.0f}",
                        kl="-" if kl is None else f"{row['kl/to_sft']:.2f}", s_it=f"{row['time/step']:.1f}")
        if checkpoint_dir is not None and ((it + 1) % checkpoint_every == 0 or it + 1 == cfg.iterations):
            checkpoint.save(checkpoint_dir, it + 1, fingerprint, policy, opt, write=accelerator.is_main_process,
                            extra={"baseline": baseline, "history": history, "scaler": scaler.state_dict()})
            accelerator.wait_for_everyone()
    tracking.end_run(accelerator)
    policy.eval()
    return history


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
