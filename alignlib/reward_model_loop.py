"""The reward-model training loop, read top to bottom: batch, forward, loss, step, log.

The history it returns (and checkpoints) names its metrics in the scheme both loops share:
"step", then "<group>/<name>": "train/loss", "train/accuracy" (share of pairs ranked right),
"train/tokens" (real tokens in the step), "optim/lr", "optim/grad_norm" (None: an fp16 step the
loss scaler skipped) and "time/step".

The plumbing is elsewhere, named: `distributed` (each process's micro-batches, gradient sync at
the last, sums over processes), `checkpoint` (resuming, saving) and `precision` (autocast, the
fp16 loss scaler, the guards against non-finite numbers).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import checkpoint, config, distributed, precision, tracking
from .data import encode_pair, length_bucketed_batches
from .losses import reward_model_loss
from .packing import pack_pairs
from .scoring import HeadAt, pair_logits, reward_from_logits

HISTORY_KEYS = ("step", "train/loss", "train/accuracy", "train/tokens", "optim/lr", "optim/grad_norm", "time/step")


def warmup_then_linear_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor of optimizer step `step` (0-based): linear warm-up to 1 over
    `warmup_steps`, then linear decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def train_reward_model(model, tokenizer, pairs, cfg, max_length: int, progress: bool = True, checkpoint_dir=None,
                       checkpoint_every: int = config.RM_CHECKPOINT_EVERY, run_name: str | None = None) -> dict:
    """Train a reward model on preference pairs; returns the per-step history (HISTORY_KEYS).

    One optimizer step = `cfg.batch_size * cfg.grad_accum` pairs, each pair one packed
    sequence, the batches length-bucketed (their order drawn from `cfg.seed`). AdamW on the
    trainable (LoRA + head) parameters, linear warm-up then linear decay, gradient-norm
    clipping. Under fp16 (`cfg.amp`), the loss is scaled (`precision.grad_scaler`); a step whose
    gradients overflow is skipped, logged with grad_norm None, and counted, and the run stops
    only when the loss itself is non-finite or `precision.MAX_SKIPS_IN_A_ROW` steps in a row
    are skipped. The loop does not seed the global RNGs (LoRA dropout draws from them): the
    caller seeds the run once, at its top (runs.py).

    With `checkpoint_dir`, the state is saved every `checkpoint_every` steps and at the end,
    and a run that finds a checkpoint of the same settings there continues from it (giving
    the same result as an uninterrupted run).

    Under `accelerate launch` with N processes, each optimizer step takes `cfg.grad_accum * N`
    micro-batches, `cfg.grad_accum` per process; the gradients are averaged over the processes
    (DDP) and the logged metrics summed over them: global batch = batch_size x N x grad_accum
    pairs. Only the main process writes checkpoints. Without the launcher: one process, as before.

    Each step's row also goes to `<checkpoint_dir>/train_log.jsonl` and to the experiment tracker
    ``$ALIGNLIB_TRACKER`` names, if any, under the project `run_name` (see `tracking`).
    """
    # the caller placed the model (machine.device()); a tracker asked for but not installed fails here
    accelerator = Accelerator(device_placement=False, **tracking.tracker_from_env())
    rank, world = accelerator.process_index, accelerator.num_processes
    heads = accelerator.prepare(HeadAt(model))  # DDP under the launcher
    device = next(model.parameters()).device
    encoded = [encode_pair(tokenizer, p, max_length) for p in pairs]
    micro_batches = epoch_batches(encoded, cfg.batch_size, cfg.epochs, cfg.seed)
    per_step = cfg.grad_accum * world  # micro-batches per optimizer step, over all processes
    total_steps = optimizer_steps(len(micro_batches), per_step, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_then_linear_decay(s, cfg.warmup_steps, total_steps))
    scaler = precision.grad_scaler(cfg.amp, device)  # fp16 only: dynamic loss scaling
    fingerprint = checkpoint.fingerprint(cfg, max_length=max_length, n_pairs=len(pairs), processes=world)
    step, saved = checkpoint.resume(checkpoint_dir, fingerprint, model, opt, "reward-model training at step",
                                    scheduler=sched, scaler=scaler)
    history = saved.get("history") or {key: [] for key in HISTORY_KEYS}
    tracking.start_run(accelerator, run_name or "reward_model", dataclasses.asdict(cfg) | {"max_length": max_length},
                       checkpoint_dir, history)

    model.train()
    bar = tqdm(total=total_steps, initial=step, desc="RM training",
               disable=not (progress and accelerator.is_main_process))
    while step < total_steps:
        t0 = time.perf_counter()
        where = f"at step {step} (last good checkpoint, if any: {checkpoint_dir})"
        group = distributed.dealt(micro_batches[step * per_step:(step + 1) * per_step], rank, world)
        sums = {"loss": 0.0, "right": 0, "n": 0, "tokens": 0}
        for n, batch in enumerate(group, 1):  # gradient accumulation
            packed = pack_pairs([encoded[i] for i in batch], tokenizer.pad_token_id)
            sync = distributed.accumulating(accelerator, heads, last=n == len(group))  # DDP averages at the last
            with sync, precision.autocast(cfg.amp, device):
                logits_c, logits_r = pair_logits(heads, packed)
                loss = reward_model_loss(cfg.loss, logits_c.float(), logits_r.float(), cfg.margin, cfg.center_coef)
            precision.backward(loss, scaler, "RM loss", where, accumulated=cfg.grad_accum)
            add_counts(sums, loss, logits_c, logits_r, packed)
        grad_norm = precision.optimizer_step(opt, scaler, params, cfg.max_grad_norm, where,  # None: fp16 skip
                                             clip=accelerator.clip_grad_norm_)
        row = step_row(step + 1, distributed.summed(accelerator, sums, device), sched.get_last_lr()[0], grad_norm,
                       time.perf_counter() - t0)
        for key in HISTORY_KEYS:
            history[key].append(row[key])
        tracking.log_step(accelerator, row, checkpoint_dir)
        precision.raise_if_stuck(history["optim/grad_norm"], where)
        if grad_norm is not None:  # as accelerate does: a skipped step does not advance the schedule
            sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(history['train/loss'][-20:]):.3f}",
                        acc=f"{np.mean(history['train/accuracy'][-20:]):.2f}")
        checkpoint.save_if_due(checkpoint_dir, step, checkpoint_every, total_steps, fingerprint, model, opt,
                               {"history": history, "scheduler": sched.state_dict(), "scaler": scaler.state_dict()},
                               accelerator)
    bar.close()
    tracking.end_run(accelerator)
    model.eval()
    return history


def epoch_batches(encoded: list, batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """The micro-batches of every epoch, in training order: lists of indices into `encoded` (pairs),
    length-bucketed, epoch e's order drawn from seed + e."""
    lengths = [len(e.prompt) + len(e.chosen) + len(e.rejected) for e in encoded]
    return [b for epoch in range(epochs) for b in length_bucketed_batches(lengths, batch_size, seed=seed + epoch)]


def optimizer_steps(micro_batches: int, per_step: int, max_steps: int | None) -> int:
    """Whole optimizer steps of `per_step` micro-batches (the remainder is left out), at most `max_steps`
    (None: no cap)."""
    steps = micro_batches // per_step
    return steps if max_steps is None else min(steps, max_steps)


def add_counts(sums: dict, loss: torch.Tensor, logits_c: torch.Tensor, logits_r: torch.Tensor, packed) -> None:
    """Add one micro-batch to the step's sums (in place): "loss" (times its pairs), "right" (pairs whose
    chosen reply gets the higher reward), "n" (pairs) and "tokens" (real tokens).

    Args:
        loss: () the micro-batch's mean loss.
        logits_c, logits_r: (pairs, num_labels) the head's outputs for the chosen and rejected replies.
    """
    with torch.no_grad():
        margin = reward_from_logits(logits_c.float()) - reward_from_logits(logits_r.float())
    pairs = len(logits_c)
    sums["loss"] += loss.item() * pairs
    sums["right"] += int((margin > 0).sum())
    sums["n"] += pairs
    sums["tokens"] += packed.n_tokens


def step_row(step: int, sums: dict, lr: float, grad_norm: float | None, seconds: float) -> dict:
    """One optimizer step's row of the history (HISTORY_KEYS), from the step's sums (`add_counts`) over all
    processes."""
    return {"step": step, "train/loss": sums["loss"] / sums["n"], "train/accuracy": sums["right"] / sums["n"],
            "train/tokens": int(sums["tokens"]), "optim/lr": lr, "optim/grad_norm": grad_norm, "time/step": seconds}
