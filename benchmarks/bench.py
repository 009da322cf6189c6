"""alignlib against Hugging Face TRL on identical work, in one process; writes results/bench.json.

What is compared
----------------
1. Reward-model training: ``alignlib.reward_model_loop.train_reward_model`` against ``trl.RewardTrainer``.
   Both start from the same SmolLM2 weights (``models.locate_model()``), with a fresh scalar head
   and the same LoRA adapters (``models.lora_config``: r=16, alpha=32, dropout 0.05 on q/v, head
   trained), the same AdamW learning rate and warm-up, batches of the same preference pairs, the
   same number of optimizer steps and the same precision (by default the one the `cpu` profile
   resolves to on this machine: bf16 autocast where this CPU has fast bf16, else float32).
   The pairs are the first training pairs whose prompt + longer reply fits the 384-token limit
   (so alignlib truncates nothing and TRL drops nothing), and TRL reads them in the order of
   alignlib's length-bucketed batches (``train_sampling_strategy="sequential"`` on a dataset laid
   out batch by batch): every optimizer step of both trainers sees exactly the same 8 pairs.
   What differs is each library's own way of doing the work: alignlib packs
   [prompt, chosen, rejected] into one sequence with the prompt read once; TRL runs prompt+chosen
   and prompt+rejected as two right-padded rows. Hence pairs/s is the like-for-like figure, and
   tokens/s (real, unpadded tokens each library actually processed) shows raw throughput.

2. Policy optimisation: alignlib's ``reinforce_loop.train_reinforce`` with the EMA baseline (k=1) and
   with the leave-one-out baseline (RLOO, k=2) against ``trl.RLOOTrainer`` (k=2). Same policy
   weights (full fine-tuning), the same reward model (a scalar RM from ``models.new_reward_model``,
   untrained, LoRA merged into a plain sequence classifier so that TRL takes it as a reward
   model), the same prompts every iteration, the same number of sampled replies per iteration,
   the same sampling (top_p 0.9, top_k off, temperature 1), the same max new tokens, lr 1e-5,
   no KL term and no reference model (alignlib kl_beta=0, ref_policy=None; TRL beta=0).
   The EMA run gets each prompt twice (k=1), so it samples the same replies to the same
   prompts as the two RLOO runs. TRL additionally runs a no-grad forward per iteration for its
   PPO-style "old" log-probabilities (always, even with num_iterations=1); it is timed apart.

3. The machine's limit, measured in the same run: GFLOP/s of a large matmul in the precision used
   (and in fp32), and each reward-model trainer's achieved model FLOP/s (real tokens/s x
   ``models.train_flops_per_token``) as a fraction of the matmul rate of that precision.

Both libraries run on the CPU (TRL with ``use_cpu=True``): this compares the two libraries' work on
the machine the course is sized for, not GPU speed.

How it is timed
---------------
Every optimizer step in the process is time-stamped through torch's global optimizer-step hook,
the same mechanism for both libraries; a run's first steps (warm-up) are excluded and the timed
window runs from the end of the last warm-up step to the end of the last step. Each figure is
the median over repeats (fresh models and trainers each time; the library order alternates from
one repeat to the next), with min/max. Peak RSS is sampled every 20 ms (``machine.PeakMemory``)
over a whole run including building the models and the trainer; the RSS before the run is
recorded too, since in one process the baseline carries what earlier runs left on the heap.

Usage:  HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench.py [--quick] [--out PATH] [--amp auto|none|bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from alignlib import config, data, machine, models, precision, records, reinforce_loop, reward_model_loop, rollout, scoring

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class BenchSettings:
    repeats: int = 3
    amp: str = "auto"  # resolved before the runs: "bf16" (bf16 autocast in both libraries) or "none" (float32)
    # reward-model training
    rm_batch_pairs: int = 8
    rm_warmup_steps: int = 2
    rm_timed_steps: int = 8
    rm_pair_max_tokens: int | None = None  # None: the profile's max_length (384)
    # policy optimisation
    policy_prompts: int = 4  # prompts per iteration (RLOO runs; the EMA run gets each twice)
    policy_k: int = 2  # replies per prompt of the RLOO runs
    policy_warmup_iters: int = 1
    policy_timed_iters: int = 2
    max_new_tokens: int = 64
    max_prompt_tokens: int = 128  # prompts longer than this are not used
    policy_lr: float = 1e-5
    top_p: float = 0.9
    temperature: float = 1.0
    # machine
    matmul_n: int = 2048


FULL = BenchSettings()
QUICK = BenchSettings(repeats=1, rm_batch_pairs=4, rm_warmup_steps=1, rm_timed_steps=1, rm_pair_max_tokens=128,
                      policy_prompts=2, policy_warmup_iters=1, policy_timed_iters=1, max_new_tokens=8,
                      matmul_n=512)


# ------------------------------------------------------------------- measuring helpers


class StepClock:
    """perf_counter() at the end of every optimizer step of this process, whoever runs it.

    Uses torch's global optimizer-step post-hook. Only torch's own optimizers are counted, so a
    wrapper that delegates to one (accelerate's AcceleratedOptimizer) does not count twice.
    """

    def __enter__(self):
        self.times: list[float] = []

        def hook(optimizer, args, kwargs):
            if type(optimizer).__module__.startswith("torch.optim"):
                self.times.append(time.perf_counter())

        self._handle = register_optimizer_step_post_hook(hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()

    @property
    def steps(self) -> int:
        return len(self.times)

    def window(self, warmup: int, timed: int) -> float:
        """Seconds from the end of step `warmup` to the end of step `warmup + timed` (1-based)."""
        if self.steps < warmup + timed:
            raise RuntimeError(f"only {self.steps} optimizer steps were seen, {warmup + timed} expected")
        return self.times[warmup + timed - 1] - self.times[warmup - 1]


class TokenCounter:
    """Tokens of every forward call of a transformer body: padded (ids.numel()) and real (2-D mask sum)."""

    def __init__(self, body):
        self.padded: list[int] = []
        self.real: list[int | None] = []
        self._handle = body.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.padded.append(int(ids.numel()) if ids is not None else 0)
        self.real.append(int(mask.sum()) if mask is not None and mask.dim() == 2 else None)

    def remove(self):
        self._handle.remove()


class DtypeProbe:
    """The output dtypes seen at a module (e.g. layer 0's q_proj): shows which precision really ran."""

    def __init__(self, module):
        self.seen: set[str] = set()
        self._handle = module.register_forward_hook(self._record)

    def _record(self, module, args, out):
        self.seen.add(str(out.dtype).removeprefix("torch."))

    def remove(self) -> list[str]:
        self._handle.remove()
        return sorted(self.seen)


def first_q_proj(model):
    """Layer 0's q_proj of a (possibly PEFT-wrapped) SmolLM2 causal LM or sequence classifier."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model.layers[0].self_attn.q_proj


def release_memory() -> float:
    """Free what the previous run left behind (gc + glibc malloc_trim); returns the RSS after, MB."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return machine._rss_mb()


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def median_of(runs: list[dict], key: str) -> dict:
    return spread([r[key] for r in runs])


@contextlib.contextmanager
def quiet():
    """Silence the expected library chatter (head newly initialised, generation flags, ...)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars
    logging.getLogger("trl").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------- workloads


def pick_pairs(tokenizer, pairs, n: int, max_tokens: int, margin: int = 8) -> list:
    """The first `n` pairs whose prompt + longer reply fits `max_tokens - margin` (no truncation).

    The margin covers the few tokens by which TRL's whole-conversation tokenization can differ
    from alignlib's prompt / reply tokenization at their boundary.
    """
    out = []
    for p in pairs:
        e = data.encode_pair(tokenizer, p, max_length=10**9)
        if len(e.prompt) + max(len(e.chosen), len(e.rejected)) <= max_tokens - margin:
            out.append(p)
            if len(out) == n:
                return out
    raise RuntimeError(f"only {len(out)} training pairs fit {max_tokens - margin} tokens; {n} needed")


def alignlib_batch_order(tokenizer, pairs, cfg, max_length: int) -> list[int]:
    """The pair indices in the order alignlib's trainer consumes them (its length-bucketed batches)."""
    encoded = [data.encode_pair(tokenizer, p, max_length) for p in pairs]
    lengths = [len(e.prompt) + len(e.chosen) + len(e.rejected) for e in encoded]
    batches = data.length_bucketed_batches(lengths, cfg.batch_size, seed=cfg.seed)
    return [i for b in batches for i in b]


def pick_prompts(tokenizer, pairs, n: int, max_tokens: int) -> list[list[dict]]:
    """`n` distinct single-turn prompts of at most `max_tokens` tokens (chat template included)."""
    seen, out = set(), []
    for p in pairs:
        if len(p.prompt) != 1 or p.prompt_key in seen:
            continue
        seen.add(p.prompt_key)
        if len(rollout.encode_prompts(tokenizer, [p.prompt])[0]) <= max_tokens:
            out.append(list(p.prompt))
            if len(out) == n:
                return out
    raise RuntimeError(f"only {len(out)} single-turn prompts fit {max_tokens} tokens; {n} needed")


def scalar_reward_model(seed: int = 0):
    """The policy runs' reward model: an untrained scalar RM, LoRA merged into a plain classifier."""
    rm = models.new_reward_model(config.RewardModelConfig(seed=seed)).merge_and_unload()
    return rm.eval()


# ------------------------------------------------------------- reward model: alignlib


def run_alignlib_rm(path, pairs, cfg, max_length: int, s: BenchSettings) -> dict:
    rss_before = release_memory()
    tokenizer = models.load_tokenizer(path)
    machine.seed_everything(cfg.seed)  # a run seeds once, at its top (as runs.reward_model_run does)
    with machine.PeakMemory() as mem, StepClock() as clock:
        model = models.new_reward_model(cfg)
        counter, probe = TokenCounter(model.get_base_model().model), DtypeProbe(first_q_proj(model))
        history = reward_model_loop.train_reward_model(model, tokenizer, pairs, cfg, max_length, progress=False)
        counter.remove()
        dtypes = probe.remove()
    flops_per_token = models.train_flops_per_token(model)
    del model
    w, m = s.rm_warmup_steps, s.rm_timed_steps
    return rm_run_record(clock, s, real=history["train/tokens"], padded=counter.padded, peak=mem.peak_mb,
                         rss_before=rss_before, dtypes=dtypes, loss=history["train/loss"],
                         extra={"train_flops_per_token": flops_per_token, "steps_run": len(history["step"]),
                                "pairs_timed": s.rm_batch_pairs * m, "first_timed_step": w + 1})


def rm_run_record(clock, s, *, real, padded, peak, rss_before, dtypes, loss, extra) -> dict:
    w, m = s.rm_warmup_steps, s.rm_timed_steps
    if len(real) != clock.steps or len(padded) != clock.steps:
        raise RuntimeError(f"{clock.steps} optimizer steps but {len(real)} / {len(padded)} forward passes")
    seconds = clock.window(w, m)
    real_t, padded_t = sum(real[w:w + m]), sum(padded[w:w + m])
    return {"timed_seconds": seconds, "sec_per_step": seconds / m,
            "pairs_per_s": s.rm_batch_pairs * m / seconds, "tokens_per_s": real_t / seconds,
            "padded_tokens_per_s": padded_t / seconds, "real_tokens_timed": real_t,
            "padded_tokens_timed": padded_t, "padding_fraction": 1 - real_t / padded_t,
            "real_tokens_per_step": list(real), "padded_tokens_per_step": list(padded),
            "peak_rss_mb": peak, "rss_before_mb": rss_before, "peak_rss_above_start_mb": peak - rss_before,
            "q_proj_dtypes": dtypes, "loss_per_step": loss, "torch_threads": torch.get_num_threads(), **extra}


# ------------------------------------------------------------------ reward model: TRL


def trl_preference_dataset(pairs, order: list[int]):
    """TRL's conversational preference format (explicit prompt), rows in alignlib's batch order."""
    from datasets import Dataset

    rows = [{"prompt": list(pairs[i].prompt),
             "chosen": [{"role": "assistant", "content": pairs[i].chosen}],
             "rejected": [{"role": "assistant", "content": pairs[i].rejected}]} for i in order]
    return Dataset.from_list(rows)


def trl_reward_config(cfg, s: BenchSettings, max_length: int, output_dir: str):
    """RewardConfig matching alignlib's RM run. Departures from TRL's defaults, and why:
    gradient_checkpointing off (alignlib does not recompute activations), dropout kept (alignlib
    trains with LoRA dropout 0.05), sequential sampling (same batches as alignlib), use_cpu for bf16."""
    from trl import RewardConfig

    return RewardConfig(
        output_dir=output_dir, per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, lr_scheduler_type="linear",
        warmup_steps=cfg.warmup_steps, max_grad_norm=cfg.max_grad_norm,
        max_steps=s.rm_warmup_steps + s.rm_timed_steps, max_length=max_length,
        gradient_checkpointing=False, disable_dropout=False, train_sampling_strategy="sequential",
        bf16=s.amp == "bf16", use_cpu=True, seed=cfg.seed, dataloader_num_workers=0,
        report_to="none", save_strategy="no", disable_tqdm=True,
    )


def silence_trainer(trainer):
    """No per-log printing: the benchmark prints its own summary."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


COMMON_TRL_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
                   "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "max_steps", "bf16",
                   "use_cpu", "optim", "gradient_checkpointing", "disable_dropout", "seed")
REWARD_TRL_KEYS = COMMON_TRL_KEYS + ("train_sampling_strategy", "max_length")
RLOO_TRL_KEYS = COMMON_TRL_KEYS + ("num_generations", "generation_batch_size", "steps_per_generation",
                                   "max_completion_length", "temperature", "top_p", "top_k", "beta",
                                   "num_iterations", "normalize_advantages", "shuffle_dataset")


def trl_settings(args, keys) -> dict:
    """The TRL arguments that matter for the comparison, as recorded in bench.json."""
    out = {}
    for k in keys:
        v = getattr(args, k)
        out[k] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
    return out


def run_trl_rm(path, pairs, order, cfg, max_length: int, s: BenchSettings) -> dict:
    from trl import RewardTrainer

    rss_before = release_memory()
    tokenizer = models.load_tokenizer(path)
    out_dir = tempfile.mkdtemp(prefix="bench-trl-rm-")
    try:
        with machine.PeakMemory() as mem, StepClock() as clock:
            with torch.random.fork_rng(devices=[]):  # the same head as alignlib's run draws (models.new_reward_model)
                torch.manual_seed(cfg.seed)
                backbone = models.load_reward_backbone(1)
            args = trl_reward_config(cfg, s, max_length, out_dir)
            trainer = RewardTrainer(model=backbone, args=args, train_dataset=trl_preference_dataset(pairs, order),
                                    processing_class=tokenizer, peft_config=models.lora_config(cfg))
            if len(trainer.train_dataset) != len(pairs):
                raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of {len(pairs)} pairs at max_length="
                                   f"{max_length}: the two libraries would not see the same pairs")
            silence_trainer(trainer)
            model = trainer.model
            counter, probe = TokenCounter(model.get_base_model().model), DtypeProbe(first_q_proj(model))
            output = trainer.train()
            counter.remove()
            dtypes = probe.remove()
        settings = trl_settings(trainer.args, REWARD_TRL_KEYS)
        del trainer, model, backbone
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return rm_run_record(clock, s, real=counter.real, padded=counter.padded, peak=mem.peak_mb, rss_before=rss_before,
                         dtypes=dtypes, loss=[output.training_loss],
                         extra={"steps_run": clock.steps, "pairs_timed": s.rm_batch_pairs * s.rm_timed_steps,
                                "first_timed_step": s.rm_warmup_steps + 1, "trl_args": settings})


# ------------------------------------------------------------------- policy: alignlib


def run_alignlib_policy(path, prompts, s: BenchSettings, baseline: str, max_length: int) -> dict:
    """alignlib REINFORCE: baseline "ema" (k=1, each prompt twice) or "rloo" (k replies per prompt)."""
    k = s.policy_k if baseline == "rloo" else 1
    pool = prompts if baseline == "rloo" else [p for p in prompts for _ in range(s.policy_k)]
    cfg = config.with_overrides(
        config.get_profile("cpu").reinforce, iterations=s.policy_warmup_iters + s.policy_timed_iters,
        prompts_per_iter=len(pool), samples_per_prompt=k, baseline=baseline, max_new_tokens=s.max_new_tokens,
        top_p=s.top_p, temperature=s.temperature, lr=s.policy_lr, kl_beta=0.0, truncation_penalty=0.0,
        amp=s.amp, seed=0)
    rss_before = release_memory()
    tokenizer = models.load_tokenizer(path)
    with machine.PeakMemory() as mem, StepClock() as clock:
        policy = models.load_policy()
        rm = scalar_reward_model()
        scorer = scoring.RewardScorer(rm, tokenizer, max_length, 16, s.amp)
        probes = {"policy": DtypeProbe(first_q_proj(policy)), "reward_model": DtypeProbe(first_q_proj(rm))}
        machine.seed_everything(cfg.seed)  # a run seeds once, at its top (as runs.reinforce_run does)
        history = reinforce_loop.train_reinforce(policy, tokenizer, scorer.score, pool, cfg, ref_policy=None,
                                                 progress=False)
        dtypes = {name: p.remove() for name, p in probes.items()}
    del policy, rm, scorer
    w, m = s.policy_warmup_iters, s.policy_timed_iters
    timed = slice(w, w + m)
    samples = len(pool) * k
    phases = {part: statistics.mean(history[f"time/{part}"][timed]) for part in ("generate", "score", "backward")}
    gen_tokens = sum(length * samples for length in history["response/length"][timed])
    return policy_run_record(clock, s, samples=samples, gen_tokens=gen_tokens, phases=phases, peak=mem.peak_mb,
                             rss_before=rss_before, dtypes=dtypes,
                             extra={"self_reported_sec_per_iter": statistics.mean(history["time/step"][timed]),
                                    "settings": {"baseline": baseline, "prompts_per_iter": cfg.prompts_per_iter,
                                                 "samples_per_prompt": k, "distinct_prompts": len(prompts),
                                                 "iterations": cfg.iterations, "amp": cfg.amp}})


def policy_run_record(clock, s, *, samples, gen_tokens, phases, peak, rss_before, dtypes, extra) -> dict:
    w, m = s.policy_warmup_iters, s.policy_timed_iters
    seconds = clock.window(w, m)
    return {"timed_seconds": seconds, "sec_per_iter": seconds / m, "samples_per_iter": samples,
            "samples_per_s": samples * m / seconds, "generated_tokens_per_s": gen_tokens / seconds,
            "mean_reply_tokens": gen_tokens / (samples * m),
            "phase_sec_per_iter": phases, "peak_rss_mb": peak, "rss_before_mb": rss_before,
            "peak_rss_above_start_mb": peak - rss_before, "q_proj_dtypes": dtypes,
            "torch_threads": torch.get_num_threads(), **extra}


# ------------------------------------------------------------------------ policy: TRL


def trl_rloo_config(s: BenchSettings, output_dir: str):
    """RLOOConfig matching alignlib's RLOO run: one generation batch (prompts x k replies) and one
    optimizer step per iteration, no KL term (beta=0: no reference model), constant lr, full
    fine-tuning. gradient_checkpointing is off (TRL's default is on; alignlib does not recompute)."""
    from trl import RLOOConfig

    return RLOOConfig(
        output_dir=output_dir, per_device_train_batch_size=s.policy_prompts * s.policy_k,
        gradient_accumulation_steps=1, num_generations=s.policy_k, max_completion_length=s.max_new_tokens,
        temperature=s.temperature, top_p=s.top_p, top_k=0, learning_rate=s.policy_lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.0,
        num_iterations=1, max_steps=s.policy_warmup_iters + s.policy_timed_iters, gradient_checkpointing=False,
        bf16=s.amp == "bf16", use_cpu=True, seed=0, dataloader_num_workers=0, report_to="none",
        save_strategy="no", disable_tqdm=True,
    )


def time_trl_rloo_phases(trainer, clock: StepClock):
    """Wrap RLOOTrainer's generation, scoring and log-prob methods to time them per iteration.

    Returns (phases, generated): phases[iteration][name] seconds, generated[iteration] tokens.
    The "old_logps" phase is the no-grad forward TRL always runs for its importance ratio.
    """
    phases: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    generated: dict[int, int] = defaultdict(int)

    def timed(name, phase_of):
        original = getattr(trainer, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            phases[clock.steps][phase_of()] += time.perf_counter() - t0
            if name == "_generate":
                generated[clock.steps] += sum(len(ids) for ids in out[1])
            return out

        setattr(trainer, name, wrapper)

    timed("_generate", lambda: "generate")
    timed("_calculate_rewards", lambda: "score")
    timed("_get_per_token_logps_and_entropies",
          lambda: "policy_forward_grad" if torch.is_grad_enabled() else "old_logps")
    return phases, generated


def run_trl_policy(path, prompts, s: BenchSettings) -> dict:
    from datasets import Dataset
    from trl import RLOOTrainer

    rss_before = release_memory()
    out_dir = tempfile.mkdtemp(prefix="bench-trl-rloo-")
    try:
        with machine.PeakMemory() as mem, StepClock() as clock:
            policy = models.load_policy()
            rm = scalar_reward_model()
            trainer = RLOOTrainer(
                model=policy, reward_funcs=rm, args=trl_rloo_config(s, out_dir),
                train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=models.load_tokenizer(path),
                reward_processing_classes=models.load_tokenizer(path))
            silence_trainer(trainer)
            probes = {"policy": DtypeProbe(first_q_proj(policy)), "reward_model": DtypeProbe(first_q_proj(rm))}
            phases, generated = time_trl_rloo_phases(trainer, clock)
            trainer.train()
            dtypes = {name: p.remove() for name, p in probes.items()}
        settings = trl_settings(trainer.args, RLOO_TRL_KEYS)
        del trainer, policy, rm
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    w, m = s.policy_warmup_iters, s.policy_timed_iters
    timed_iters = range(w, w + m)
    per_iter = [clock.times[i] - clock.times[i - 1] for i in timed_iters]
    names = ("generate", "score", "old_logps", "policy_forward_grad")
    mean_phase = {n: statistics.mean(phases[i][n] for i in timed_iters) for n in names}
    # alignlib's "backward" = log-prob forward with gradients + backward + optimizer step; TRL's
    # equivalent is everything in the iteration that is not generation, scoring or the old log-probs.
    mean_phase["backward"] = statistics.mean(t - phases[i]["generate"] - phases[i]["score"] - phases[i]["old_logps"]
                                             for i, t in zip(timed_iters, per_iter))
    return policy_run_record(clock, s, samples=s.policy_prompts * s.policy_k,
                             gen_tokens=sum(generated[i] for i in timed_iters), phases=mean_phase, peak=mem.peak_mb,
                             rss_before=rss_before, dtypes=dtypes, extra={"trl_args": settings})


# ----------------------------------------------------------------------------- driver


def interleaved(runners: dict, repeats: int, label: str) -> dict[str, list[dict]]:
    """Run every runner `repeats` times, rotating the order each repeat (drift hits all alike)."""
    names, runs = list(runners), defaultdict(list)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            runs[name].append(runners[name]())
            print(f"  [{label}] repeat {r + 1}/{repeats} {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return dict(runs)


def lora_summary(cfg) -> dict:
    lora = models.lora_config(cfg)
    return {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout,
            "target_modules": sorted(lora.target_modules), "modules_to_save": list(lora.modules_to_save)}


def same_batches_check(tokenizer, pairs, order, batch: int, trl_tokens_per_step: list[int]) -> dict:
    """Evidence that TRL trained on alignlib's batches: the tokens TRL counted at each step against
    those alignlib's encoding predicts for two rows per pair (2 x prompt + chosen + rejected)."""
    encoded = [data.encode_pair(tokenizer, pairs[i], 10**9) for i in order]
    expected = [sum(2 * len(e.prompt) + len(e.chosen) + len(e.rejected) for e in encoded[j:j + batch])
                for j in range(0, len(encoded), batch)][:len(trl_tokens_per_step)]
    worst = max(abs(a - b) / b for a, b in zip(trl_tokens_per_step, expected))
    return {"expected_trl_tokens_per_step": expected, "trl_tokens_per_step": trl_tokens_per_step,
            "max_relative_difference": worst, "same_batches": worst < 0.02}


def bench_reward_models(path, tokenizer, prefs, s: BenchSettings, gflops: dict) -> dict:
    profile = config.get_profile("cpu")
    max_length = profile.data.max_length
    cfg = config.with_overrides(profile.rm_scalar, batch_size=s.rm_batch_pairs, grad_accum=1, epochs=1,
                                max_steps=None, amp=s.amp, seed=0)
    n_steps = s.rm_warmup_steps + s.rm_timed_steps
    pairs = pick_pairs(tokenizer, prefs.train, n_steps * cfg.batch_size, s.rm_pair_max_tokens or max_length)
    order = alignlib_batch_order(tokenizer, pairs, cfg, max_length)
    runs = interleaved({"alignlib": lambda: run_alignlib_rm(path, pairs, cfg, max_length, s),
                        "trl": lambda: run_trl_rm(path, pairs, order, cfg, max_length, s)}, s.repeats, "RM")
    same = same_batches_check(tokenizer, pairs, order, cfg.batch_size, runs["trl"][0]["real_tokens_per_step"])
    peak = gflops["used"]
    flops_per_token = runs["alignlib"][0]["train_flops_per_token"]
    out = {"settings": {"pairs": len(pairs), "batch_pairs": cfg.batch_size, "optimizer_steps": n_steps,
                        "warmup_steps_excluded": s.rm_warmup_steps, "timed_steps": s.rm_timed_steps,
                        "max_length": max_length, "pair_selection": "first training pairs with prompt + longer reply "
                        f"<= {(s.rm_pair_max_tokens or max_length) - 8} tokens (no truncation, none dropped by TRL)",
                        "batch_order": "alignlib's length-bucketed batches; TRL reads the same rows sequentially",
                        "same_batches_check": same,
                        "alignlib_config": dataclasses.asdict(cfg), "lora": lora_summary(cfg),
                        "train_flops_per_token": flops_per_token,
                        "matmul_peak_used": f"{gflops['used_dtype']} {peak:.1f} GFLOP/s"}}
    for name, rs in runs.items():
        for r in rs:
            r["model_flops_per_s"] = r["tokens_per_s"] * flops_per_token
            r["matmul_fraction"] = r["model_flops_per_s"] / (peak * 1e9)
        out[name] = {"runs": rs, **{k: median_of(rs, k) for k in (
            "pairs_per_s", "tokens_per_s", "padded_tokens_per_s", "sec_per_step", "peak_rss_mb",
            "peak_rss_above_start_mb", "matmul_fraction")}}
    return out


def bench_policies(path, tokenizer, prefs, s: BenchSettings) -> dict:
    max_length = config.get_profile("cpu").data.max_length
    prompts = pick_prompts(tokenizer, prefs.train, s.policy_prompts, s.max_prompt_tokens)
    runs = interleaved({"alignlib_ema": lambda: run_alignlib_policy(path, prompts, s, "ema", max_length),
                        "alignlib_rloo": lambda: run_alignlib_policy(path, prompts, s, "rloo", max_length),
                        "trl_rloo": lambda: run_trl_policy(path, prompts, s)}, s.repeats, "policy")
    out = {"settings": {"prompts_per_iter": s.policy_prompts, "replies_per_prompt_rloo": s.policy_k,
                        "replies_per_iter": s.policy_prompts * s.policy_k, "max_new_tokens": s.max_new_tokens,
                        "top_p": s.top_p, "top_k": 0, "temperature": s.temperature, "lr": s.policy_lr,
                        "kl": "none (alignlib kl_beta=0, ref_policy=None; TRL beta=0)",
                        "fine_tuning": "full (all policy parameters, AdamW)", "amp": s.amp,
                        "iterations": s.policy_warmup_iters + s.policy_timed_iters,
                        "warmup_iters_excluded": s.policy_warmup_iters, "timed_iters": s.policy_timed_iters,
                        "prompt_tokens": [len(x) for x in rollout.encode_prompts(tokenizer, prompts)],
                        "reward_model": "untrained scalar RM (models.new_reward_model, LoRA merged), "
                                        f"scored in {s.amp}; alignlib RewardScorer(max_length={max_length}, "
                                        "batch 16), TRL its built-in reward-model path"}}
    for name, rs in runs.items():
        out[name] = {"runs": rs, **{k: median_of(rs, k) for k in (
            "samples_per_s", "sec_per_iter", "generated_tokens_per_s", "peak_rss_mb", "peak_rss_above_start_mb")}}
        out[name]["phase_sec_per_iter"] = {p: statistics.median(r["phase_sec_per_iter"][p] for r in rs)
                                           for p in rs[0]["phase_sec_per_iter"]}
    return out


def environment() -> dict:
    import datasets
    import peft
    import transformers
    import trl

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "peft": peft.__version__, "datasets": datasets.__version__,
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count(), "hardware": machine.hardware(), "load_average_start": os.getloadavg()}


PRECISION_NOTE = {
    "bf16": "bf16 autocast in both: alignlib amp='bf16'; TRL bf16=True (with use_cpu=True, which transformers requires "
            "for bf16 on CPU), applied by accelerate as CPU bf16 autocast around the models' forward. q_proj_dtypes "
            "in each run record show the precision layer 0 actually computed in.",
    "none": "float32 in both: alignlib amp='none'; TRL bf16=False.",
}


def ratio(a: dict, b: dict) -> float:
    return a["median"] / b["median"]


def report_lines(rm: dict, pol: dict, gflops: dict, amp: str) -> list[str]:
    def fig(d, fmt="{:.2f}"):
        return f"{fmt.format(d['median'])} [{fmt.format(d['min'])}-{fmt.format(d['max'])}]"

    a, t = rm["alignlib"], rm["trl"]
    lines = [
        f"machine          matmul fp32 {gflops['fp32']:.1f} GFLOP/s, {gflops['used_dtype']} (used) "
        f"{gflops['used']:.1f} GFLOP/s",
        f"RM pairs/s       alignlib {fig(a['pairs_per_s'])}  TRL {fig(t['pairs_per_s'])}  "
        f"ratio {ratio(a['pairs_per_s'], t['pairs_per_s']):.2f}x",
        f"RM tokens/s      alignlib {fig(a['tokens_per_s'], '{:.0f}')}  TRL {fig(t['tokens_per_s'], '{:.0f}')}  "
        f"ratio {ratio(a['tokens_per_s'], t['tokens_per_s']):.2f}x (real tokens; alignlib reads each prompt once)",
        f"RM peak RSS MB   alignlib {fig(a['peak_rss_mb'], '{:.0f}')}  TRL {fig(t['peak_rss_mb'], '{:.0f}')}  "
        f"ratio {ratio(a['peak_rss_mb'], t['peak_rss_mb']):.2f}x",
        f"RM matmul frac   alignlib {a['matmul_fraction']['median']:.1%}  TRL {t['matmul_fraction']['median']:.1%}  "
        f"of the {gflops['used_dtype']} matmul rate  "
        f"ratio {ratio(a['matmul_fraction'], t['matmul_fraction']):.2f}x",
    ]
    tr = pol["trl_rloo"]
    for name, label in (("alignlib_rloo", "RLOO k=2"), ("alignlib_ema", "EMA k=1 ")):
        p = pol[name]
        lines.append(f"policy {label}   samples/s alignlib {fig(p['samples_per_s'])}  TRL RLOO "
                     f"{fig(tr['samples_per_s'])}  ratio {ratio(p['samples_per_s'], tr['samples_per_s']):.2f}x  "
                     f"(s/iter {p['sec_per_iter']['median']:.1f} vs {tr['sec_per_iter']['median']:.1f}; "
                     f"peak RSS {p['peak_rss_mb']['median']:.0f} vs {tr['peak_rss_mb']['median']:.0f} MB)")
    if not rm["settings"]["same_batches_check"]["same_batches"]:
        lines.append("WARNING: TRL's per-step token counts do not match alignlib's batches (see same_batches_check)")
    ph_a, ph_t = pol["alignlib_rloo"]["phase_sec_per_iter"], tr["phase_sec_per_iter"]
    lines.append("policy phases    s/iter alignlib RLOO gen {generate:.1f} score {score:.2f} backward {backward:.1f}"
                 .format(**ph_a) + " | TRL gen {generate:.1f} score {score:.2f} old_logps {old_logps:.2f} "
                 "backward {backward:.1f}".format(**ph_t))
    return lines


NOTES = [
    "TRL's gradient_checkpointing default (True) is turned off in both TRL trainers: alignlib keeps "
    "activations, and recomputing them would be different work.",
    "TRL RewardTrainer: disable_dropout=False so that the LoRA dropout (0.05) is active as in alignlib.",
    "Optimizers: TRL uses its default optim='adamw_torch_fused'; alignlib torch.optim.AdamW, fused for "
    "the policy (135M parameters), the default implementation for the reward model's LoRA + head.",
    "TRL RLOOTrainer computes log-probabilities under the temperature-scaled full softmax and always runs an "
    "extra no-grad forward for the old log-probabilities; alignlib scores replies under the renormalised "
    "top-p distribution they were sampled from (logprobs.top_p_mask: a top-512 sort per reply token).",
    "Sampling: TRL through transformers' TopPLogitsWarper (a sort of the whole vocabulary per generated "
    "token); alignlib through rollout.NucleusWarper (same rule, top-512 candidates).",
    "Reward scoring: alignlib left-pads and scores in batches of 16; TRL right-pads all replies of an "
    "iteration in one batch. Both use the same merged reward model and precision.",
    "Reply lengths are sampled, so generated tokens per iteration differ a little between runs; "
    "generated_tokens_per_s and mean_reply_tokens are recorded next to samples_per_s.",
    "Peak RSS is the process's resident memory during a run (model building included); "
    "peak_rss_above_start_mb subtracts the RSS measured just before the run.",
]


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, 2 steps, few pairs/prompts, "
                                                             "8 new tokens")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench.json")
    parser.add_argument("--amp", choices=("auto", "bf16", "none"), default="auto",
                        help="the cpu profile's choice for this machine (default), bf16 autocast in both libraries, "
                             "or float32 in both")
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    s = QUICK if args.quick else FULL
    used = precision.resolve(args.amp, "cpu")
    s = dataclasses.replace(s, amp=used.amp, repeats=args.repeats or s.repeats)

    clock = machine.Timer()
    with quiet():
        env = environment()
        path, source = models.locate_model()
        tokenizer = models.load_tokenizer(path)
        prefs = data.load_preference_data(config.get_profile("cpu").data)
        print(f"bench: {'quick' if args.quick else 'full'} run, model {source}, data {prefs.source}, "
              f"{env['torch_threads']} torch threads, load average {env['load_average_start'][0]:.1f}", flush=True)
        print("precision:", used.reason, flush=True)
        gflops = {"fp32": machine.matmul_gflops(torch.float32, n=s.matmul_n), "used_dtype": "fp32"}
        if s.amp == "bf16":
            gflops.update(used_dtype="bf16", bf16=machine.matmul_gflops(torch.bfloat16, n=s.matmul_n))
        gflops["used"] = gflops[gflops["used_dtype"]]
        rm = bench_reward_models(path, tokenizer, prefs, s, gflops)
        pol = bench_policies(path, tokenizer, prefs, s)
    env["load_average_end"] = os.getloadavg()

    record = {
        "rm_pairs_per_s_ratio_vs_trl": ratio(rm["alignlib"]["pairs_per_s"], rm["trl"]["pairs_per_s"]),
        "rm_tokens_per_s_ratio_vs_trl": ratio(rm["alignlib"]["tokens_per_s"], rm["trl"]["tokens_per_s"]),
        "rm_peak_rss_ratio_vs_trl": ratio(rm["alignlib"]["peak_rss_mb"], rm["trl"]["peak_rss_mb"]),
        "policy_samples_per_s_ratio_vs_trl": ratio(pol["alignlib_rloo"]["samples_per_s"],
                                                   pol["trl_rloo"]["samples_per_s"]),
        "policy_ema_samples_per_s_ratio_vs_trl": ratio(pol["alignlib_ema"]["samples_per_s"],
                                                       pol["trl_rloo"]["samples_per_s"]),
        "policy_peak_rss_ratio_vs_trl": ratio(pol["alignlib_rloo"]["peak_rss_mb"], pol["trl_rloo"]["peak_rss_mb"]),
        "rm_matmul_fraction": rm["alignlib"]["matmul_fraction"]["median"],
        "rm_matmul_fraction_trl": rm["trl"]["matmul_fraction"]["median"],
        "ratios_are": "alignlib / TRL, medians over repeats; policy ratio = alignlib RLOO (k=2) / TRL RLOOTrainer",
        "matmul_gflops": {**gflops, "n": s.matmul_n},
        "reward_model_training": rm,
        "policy_optimisation": pol,
        "settings": dataclasses.asdict(s),
        "quick": args.quick,
        "precision": PRECISION_NOTE[s.amp],
        "precision_reason": used.reason,
        "notes": NOTES,
        "environment": env,
        "model": {"path": path, "source": source},
        "data_source": prefs.source,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "code_version": records.code_version(),
        "wall_time_s": clock.elapsed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records._clean(record), indent=1) + "\n")
    for line in report_lines(rm, pol, gflops, s.amp):
        print(line)
    print(f"wrote {args.out} in {clock.elapsed:.0f} s")
    if max(env["load_average_start"][0], env["load_average_end"][0]) > (os.cpu_count() or 1):
        print("note: the load average exceeded the core count: other processes shared the CPU during this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
