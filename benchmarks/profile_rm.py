"""Where a reward-model training step spends its time (torch profiler), on the real model.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_rm.py

Prints (1) bf16/fp32 GEMM rates at the model's own matrix shapes next to a 2048^3 GEMM,
(2) the torch profiler's top operations over a few cpu-profile training steps of
`reward.train_reward_model`, and (3) real tokens per second of that loop (first step excluded)
with SDPA vs eager attention and with LoRA dropout on/off. Guides speed work; nothing here is a
run record. Takes about 4 minutes on 2 cores; run it on an idle machine.
"""

import contextlib

import torch
from torch.profiler import ProfilerActivity, profile

from alignlib import config, data, models, results, reward
from bench import StepClock  # benchmarks/bench.py: times optimizer steps of whatever loop runs

STEPS = 6


def main():
    for shape in [(2048, 2048, 2048), (3000, 576, 1536), (3000, 1536, 576), (3000, 576, 576)]:
        bf16, fp32 = (results.matmul_gflops(dtype, repeats=20, shape=shape) for dtype in (torch.bfloat16, torch.float32))
        print(shape, f"bf16 {bf16:.0f} GFLOP/s, fp32 {fp32:.0f}")

    profile_cfg = config.get_profile("cpu")
    cfg = config.with_overrides(profile_cfg.rm_scalar, max_steps=STEPS)
    tokenizer = models.load_tokenizer()
    pairs = data.load_preference_data(profile_cfg.data).train[: cfg.batch_size * STEPS]

    for attn, dropout, with_profiler in (("sdpa", cfg.lora_dropout, True), ("sdpa", cfg.lora_dropout, False),
                                         ("eager", cfg.lora_dropout, False), ("sdpa", 0.0, False)):
        run_cfg = config.with_overrides(cfg, lora_dropout=dropout)
        model = models.new_reward_model(run_cfg)
        model.get_base_model().set_attn_implementation(attn)
        tracing = profile(activities=[ProfilerActivity.CPU]) if with_profiler else contextlib.nullcontext()
        with tracing as prof, StepClock() as clock:
            history = reward.train_reward_model(model, tokenizer, pairs, run_cfg, profile_cfg.data.max_length,
                                                progress=False)
        if with_profiler:
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            continue
        tokens = sum(history["tokens"][1:])
        print(f"attention {attn}, LoRA dropout {dropout}: "
              f"{tokens / clock.window(1, STEPS - 1):.0f} real tokens/s")


if __name__ == "__main__":
    main()
