"""Where the time goes, and what each speed-up of the policy step buys; writes results/speed_profile.json.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/speed_profile.py      (part of `make bench`)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/speed_profile.py --kv-cache   (re-time only the KV caches)
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/speed_profile.py --precision  (only the profile's precision vs fp32)

Everything runs in the precision the `cpu` profile resolves to on this machine (`amp="auto"`:
bf16 only where this CPU multiplies bf16 faster than float32, see alignlib/precision.py).

Reward model: (1) GEMM rates at the model's own matrix shapes next to a 2048^3 GEMM, in float32,
and in bf16 where bf16 is native (emulated bf16 runs ~100x slower: its rate from the precision
probe is recorded instead), (2) the torch profiler's split of CPU time over a few cpu-profile
training steps of `reward_model_loop.train_reward_model`, grouped into matrix products, attention,
LoRA-dropout masks, element-wise work, casts and copies, and the rest, and (3) real tokens per
second of that loop (first step excluded): the profile's precision against forced float32, SDPA
against eager attention, LoRA dropout on and off.

Policy step: each optimisation against what it replaced, on the real policy: sampling with
`rollout.NucleusWarper` vs transformers' TopPLogitsWarper, the dynamic vs the static KV cache
in interleaved pairs at the training replies' length (`rollout.kv_cache_for` takes the faster
one on CPU), the gradient's nucleus (`logprobs.top_p_mask`
vs the full sort `top_p_mask_by_sort`) with the nucleus sizes seen, and fused vs for-loop AdamW
over the policy's parameters.

The report reads the record. Run it on an idle machine.
"""

import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from alignlib import config, data, logprobs, machine, models, precision, records, reward_model_loop, rollout, scoring
from bench import StepClock, pick_prompts, spread  # benchmarks/bench.py

STEPS = 4
OUT = Path(__file__).resolve().parent.parent / "results" / "speed_profile.json"
REPEATS = 3
GROUPS = {  # torch op name -> group; anything else is "other"
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
    "attention (SDPA with the packed-pair mask)": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                                                   "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "LoRA dropout masks (random numbers)": ("aten::bernoulli_",),
    "element-wise (norms, rotary, SiLU, dropout, LoRA scaling, residuals)": (
        "aten::mul", "aten::add", "aten::add_", "aten::silu", "aten::silu_backward", "aten::pow", "aten::rsqrt",
        "aten::mean", "aten::sum", "aten::div", "aten::neg", "aten::cat", "aten::where", "aten::sub"),
    "casts and copies": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"),
}


def time_split(prof) -> dict[str, float]:
    """Share of the profiled CPU time (self time) per group of GROUPS."""
    group_of = {op: group for group, ops in GROUPS.items() for op in ops}
    totals: dict[str, float] = {group: 0.0 for group in GROUPS} | {"other": 0.0}
    for event in prof.key_averages():
        totals[group_of.get(event.key, "other")] += event.self_cpu_time_total
    whole = sum(totals.values())
    return {group: t / whole for group, t in totals.items()}


def median_seconds(fn, repeats: int = REPEATS) -> dict:
    """Run fn() once to warm up, then `repeats` times: median, min, max and all seconds (bench.spread)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return spread(times)


def policy_optimisations(tokenizer, pairs) -> dict:
    """Each speed-up of the policy step timed against what it replaced, on the real policy."""
    from transformers.generation.logits_process import TopPLogitsWarper

    rl = config.get_profile("cpu").reinforce
    autocast = lambda: precision.autocast(rl.amp, torch.device("cpu"))
    policy = models.load_policy()
    prompts = pick_prompts(tokenizer, pairs, rl.prompts_per_iter, 128)
    ids, mask = data.left_pad(rollout.encode_prompts(tokenizer, prompts), tokenizer.pad_token_id)
    out = {"prompts": len(prompts), "new_tokens": rl.max_new_tokens, "top_p": rl.top_p, "repeats": REPEATS}

    def generate(warper):
        torch.manual_seed(0)
        with torch.no_grad(), autocast():
            return policy.generate(input_ids=ids, attention_mask=mask, max_new_tokens=rl.max_new_tokens,
                                   min_new_tokens=rl.max_new_tokens, do_sample=True, top_p=1.0, top_k=0,
                                   temperature=1.0, logits_processor=[warper], pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id)

    out["sampling_s"] = {"transformers TopPLogitsWarper": median_seconds(lambda: generate(TopPLogitsWarper(rl.top_p))),
                         "rollout.NucleusWarper": median_seconds(lambda: generate(rollout.NucleusWarper(rl.top_p)))}
    out.update(kv_cache_timing(policy, tokenizer, prompts))

    sequences = generate(rollout.NucleusWarper(rl.top_p))
    with torch.no_grad(), autocast():
        full_mask = torch.cat([mask, torch.ones_like(sequences[:, ids.shape[1]:])], dim=1)
        logits = policy(input_ids=sequences, attention_mask=full_mask, logits_to_keep=rl.max_new_tokens + 1,
                        use_cache=False).logits[:, :-1].float()
    sizes = logprobs.top_p_mask_by_sort(logits, rl.top_p).sum(-1).flatten().float()
    out["gradient_nucleus_s"] = {
        "top_p_mask_by_sort (whole vocabulary)": median_seconds(lambda: logprobs.top_p_mask_by_sort(logits, rl.top_p)),
        "top_p_mask (512 candidates)": median_seconds(lambda: logprobs.top_p_mask(logits, rl.top_p))}
    out["nucleus_size"] = {"median": sizes.median(), "p90": sizes.quantile(0.9), "max": sizes.max(),
                           "share_over_512": (sizes > 512).float().mean(), "positions": sizes.numel()}

    params = [p for p in policy.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    out["adamw_step_s"] = {}
    for name, kwargs in (("for-loop (torch default on CPU)", {"foreach": False}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0, **kwargs)
        out["adamw_step_s"][name] = median_seconds(opt.step)
    return out


def kv_cache_timing(policy, tokenizer, prompts, pairs_of_calls: int = 6) -> dict:
    """`rollout.sample` with the dynamic and the static KV cache, as the cpu profile samples: calls in
    pairs with the same seed (so mostly the same replies), the order alternating from pair to pair;
    the first pair is a warm-up. The two differ by less than the spread of separate runs, so only
    paired, interleaved calls can tell which is faster."""
    rl = config.get_profile("cpu").reinforce
    times, same = {"dynamic": [], "static": []}, 0
    for pair in range(pairs_of_calls):
        lengths = {}
        for cache in ("dynamic", "static") if pair % 2 == 0 else ("static", "dynamic"):
            t0 = time.perf_counter()
            roll = rollout.sample(policy, tokenizer, prompts, rl.max_new_tokens, rl.top_p, rl.temperature, seed=pair,
                                  max_prompt_tokens=rl.max_prompt_tokens, amp=rl.amp, cache=cache)
            times[cache].append(time.perf_counter() - t0)
            lengths[cache] = roll.lengths.tolist()
        same += pair > 0 and lengths["dynamic"] == lengths["static"]
    faster = [d < s for d, s in zip(times["dynamic"][1:], times["static"][1:])]
    return {"kv_cache_s": {cache: spread(t[1:]) for cache, t in times.items()},
            "kv_cache_pairs": {"timed": pairs_of_calls - 1, "dynamic_faster": sum(faster), "same_reply_lengths": same},
            "kv_cache_used_on_cpu": rollout.kv_cache_for(torch.device("cpu"), rl.max_new_tokens)}


def rm_tokens_per_s(tokenizer, pairs, run_cfg, attn: str = "sdpa") -> float:
    """Train a fresh reward model on `pairs` with `run_cfg` (STEPS steps) and return its real tokens
    per second, the first step excluded."""
    machine.seed_everything(run_cfg.seed)
    model = models.new_reward_model(run_cfg)
    model.get_base_model().set_attn_implementation(attn)
    with StepClock() as clock:
        history = reward_model_loop.train_reward_model(model, tokenizer, pairs, run_cfg,
                                                       config.get_profile("cpu").data.max_length, progress=False)
    return sum(history["train/tokens"][1:]) / clock.window(1, STEPS - 1)


def precision_pairs(tokenizer, pairs, pairs_of_runs: int = 3) -> dict:
    """Real tokens/s of the cpu profile's reward-model step with its own precision ("auto") against
    forced float32, in runs that alternate in order (each run: STEPS steps, the first excluded)."""
    cfg = config.with_overrides(config.get_profile("cpu").rm_scalar, max_steps=STEPS)
    rates = {cfg.amp: [], "none": []}
    for i in range(pairs_of_runs):
        for amp in (cfg.amp, "none") if i % 2 == 0 else ("none", cfg.amp):
            rates[amp].append(rm_tokens_per_s(tokenizer, pairs, config.with_overrides(cfg, amp=amp)))
            print(amp, f"{rates[amp][-1]:.0f} real tokens/s", flush=True)
    used = precision.resolve(cfg.amp, "cpu").amp
    return {f"{cfg.amp} ({used})": spread(rates[cfg.amp]), "forced none (float32)": spread(rates["none"]),
            "auto_at_least_as_fast_in": sum(a >= b for a, b in zip(rates[cfg.amp], rates["none"])),
            "pairs": pairs_of_runs}


def reinforce_iteration(tokenizer, pairs, iterations: int = 3) -> dict:
    """Seconds per REINFORCE iteration of the cpu profile here (real policy, the published scalar RM,
    the profile's precision), first iteration excluded, split into generate / score / backward."""
    from alignlib import reinforce_loop

    rl = config.with_overrides(config.get_profile("cpu").reinforce, iterations=iterations)
    rm = models.load_reward_model(records.ROOT / "results" / "cpu" / "adapters" / "rm_scalar", num_labels=1)
    scorer = scoring.RewardScorer(rm, tokenizer, config.get_profile("cpu").data.max_length, 16, rl.amp)
    prompts = pick_prompts(tokenizer, pairs, 4 * rl.prompts_per_iter, rl.max_prompt_tokens)
    machine.seed_everything(rl.seed)
    history = reinforce_loop.train_reinforce(models.load_policy(), tokenizer, scorer.score, prompts, rl, progress=False)
    out = {"prompts_per_iter": rl.prompts_per_iter, "max_new_tokens": rl.max_new_tokens,
           "iterations_timed": iterations - 1}
    for key, logged in (("iteration", "step"), ("generate", "generate"), ("score", "score"), ("backward", "backward")):
        out[f"sec_{key}"] = spread(history[f"time/{logged}"][1:])
    out["reply_tokens_mean"] = spread(history["response/length"][1:])
    return out


def gemm_rates(amp: str) -> dict:
    """GFLOP/s of the matrix products of SmolLM2-135M's shapes (and a square one), float32 and, where bf16 is
    native, bf16."""
    gemm = {}
    for shape in [(2048, 2048, 2048), (3000, 576, 1536), (3000, 1536, 576), (3000, 576, 576)]:
        rates = {"fp32": machine.matmul_gflops(torch.float32, repeats=20, shape=shape)}
        if amp == "bf16":  # native bf16; emulated bf16 would take minutes per shape
            rates["bf16"] = machine.matmul_gflops(torch.bfloat16, repeats=20, shape=shape)
        gemm["x".join(map(str, shape))] = rates
        print(shape, ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    return gemm


def rm_variants(tokenizer, pairs, cfg, used) -> tuple[dict, dict]:
    """(where the time goes under the torch profiler, real tokens/s of each variant of the reward model's step)."""
    split, variants = None, {}
    label = {cfg.amp: f"{cfg.amp} ({used.amp})", "none": "forced float32"}
    for attn, dropout, amp, with_profiler in (("sdpa", cfg.lora_dropout, cfg.amp, True),
                                              ("sdpa", cfg.lora_dropout, cfg.amp, False),
                                              ("sdpa", cfg.lora_dropout, "none", False),
                                              ("eager", cfg.lora_dropout, cfg.amp, False),
                                              ("sdpa", 0.0, cfg.amp, False)):
        run_cfg = config.with_overrides(cfg, lora_dropout=dropout, amp=amp)
        tracing = profile(activities=[ProfilerActivity.CPU]) if with_profiler else contextlib.nullcontext()
        with tracing as prof:
            tokens_per_s = rm_tokens_per_s(tokenizer, pairs, run_cfg, attn)
        if with_profiler:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            split = time_split(prof)
            continue
        name = f"precision {label[amp]}, attention {attn}, LoRA dropout {dropout}"
        variants[name] = tokens_per_s
        print(f"{name}: {tokens_per_s:.0f} real tokens/s")
    return split, variants


def main():
    if "--precision" in sys.argv:  # time the profile's precision against forced float32, into the existing record
        record = json.loads(OUT.read_text())
        profile_cfg = config.get_profile("cpu")
        pairs = data.load_preference_data(profile_cfg.data).train[: profile_cfg.rm_scalar.batch_size * STEPS]
        record["precision_pairs"] = precision_pairs(models.load_tokenizer(), pairs)
        record["precision_pairs_code_version"] = records.code_version()
        OUT.write_text(json.dumps(records._clean(record), indent=1) + "\n")
        print(json.dumps(records._clean(record["precision_pairs"])))
        return
    if "--kv-cache" in sys.argv:  # re-time only the KV caches, into the existing record
        record = json.loads(OUT.read_text())
        tokenizer = models.load_tokenizer()
        pairs = data.load_preference_data(config.get_profile("cpu").data).train
        prompts = pick_prompts(tokenizer, pairs, config.get_profile("cpu").reinforce.prompts_per_iter, 128)
        record["policy_optimisations"].update(kv_cache_timing(models.load_policy(), tokenizer, prompts))
        record["kv_cache_code_version"] = records.code_version()
        OUT.write_text(json.dumps(records._clean(record), indent=1) + "\n")
        print(json.dumps(record["policy_optimisations"]["kv_cache_pairs"]))
        return
    start = time.perf_counter()
    profile_cfg = config.get_profile("cpu")
    cfg = config.with_overrides(profile_cfg.rm_scalar, max_steps=STEPS)
    used = precision.resolve(cfg.amp, "cpu")
    print("precision:", used.reason)
    gemm = gemm_rates(used.amp)

    tokenizer = models.load_tokenizer()
    train_pairs = data.load_preference_data(profile_cfg.data).train
    pairs = train_pairs[: cfg.batch_size * STEPS]

    split, variants = rm_variants(tokenizer, pairs, cfg, used)
    for group, share in split.items():
        print(f"{share:6.1%}  {group}")
    policy = policy_optimisations(tokenizer, train_pairs)
    print(json.dumps(records._clean(policy), indent=1))
    iteration = reinforce_iteration(tokenizer, train_pairs)
    print(json.dumps(records._clean(iteration), indent=1))
    record = {
        "what": "reward model: torch profiler over reward_model_loop.train_reward_model, cpu profile, precision "
                f"{used.amp}, batches of {cfg.batch_size} packed pairs, {STEPS} steps; shares of self CPU time",
        "precision": precision.describe(cfg.amp, "cpu"),
        "precision_probe_gflops": precision.cpu_matmul_gflops(),
        "steps": STEPS,
        "time_split": split,
        "tokens_per_s": variants,
        "gemm_gflops": gemm,
        "policy_optimisations": policy,
        "reinforce_iteration": iteration,
        "precision_pairs": precision_pairs(tokenizer, pairs),
        "profiler": "torch.profiler (CPU activities)",
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "hardware": machine.hardware()},
        "code_version": records.code_version(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_time_s": time.perf_counter() - start,
    }
    OUT.write_text(json.dumps(records._clean(record), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    sys.exit(main())
