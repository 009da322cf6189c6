"""Where a reward-model training step spends its time (torch profiler), on the real model.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/profile_rm.py

Prints (1) bf16/fp32 GEMM rates at the model's own matrix shapes next to a 2048^3 GEMM,
(2) the torch profiler's top operations over 4 cpu-profile training steps, and (3) tokens per
second with SDPA vs eager attention and with LoRA dropout on/off. Guides issue work on speed;
nothing here is a run record. Takes about 3 minutes on 2 cores; run it on an idle machine.
"""

import time

import torch
from torch.profiler import ProfilerActivity, profile

from alignlib import config, data, models, reward


def gemm_gflops(m, k, n, dtype, reps=20):
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * m * k * n / ((time.perf_counter() - t) / reps) / 1e9


def main():
    for shape in [(2048, 2048, 2048), (3000, 576, 1536), (3000, 1536, 576), (3000, 576, 576)]:
        print(shape, f"bf16 {gemm_gflops(*shape, torch.bfloat16):.0f} GFLOP/s, fp32 {gemm_gflops(*shape, torch.float32):.0f}")

    profile_cfg = config.get_profile("cpu")
    cfg = profile_cfg.rm_scalar
    tokenizer = models.load_tokenizer()
    prefs = data.load_preference_data(profile_cfg.data)
    encoded = [data.encode_pair(tokenizer, p, profile_cfg.data.max_length) for p in prefs.train[:64]]
    batches = data.length_bucketed_batches([len(e.prompt) + len(e.chosen) + len(e.rejected) for e in encoded],
                                           cfg.batch_size, seed=0)

    for attn, dropout, with_profiler in (("sdpa", cfg.lora_dropout, True), ("eager", cfg.lora_dropout, False),
                                         ("sdpa", 0.0, False)):
        model = models.new_reward_model(config.with_overrides(cfg, lora_dropout=dropout)).train()
        model.get_base_model().set_attn_implementation(attn)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)

        def step(batch):
            packed = reward.pack_pairs([encoded[i] for i in batch], tokenizer.pad_token_id)
            with reward.autocast(cfg.amp, torch.device("cpu")):
                c, r = reward.pair_logits(model, packed)
                loss = reward.pair_loss(cfg, c.float(), r.float())
            loss.backward()
            opt.step()
            opt.zero_grad()
            return packed.n_tokens

        step(batches[0])  # warm-up
        if with_profiler:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for b in batches[1:5]:
                    step(b)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        t = time.perf_counter()
        tokens = sum(step(b) for b in batches[1:6])
        print(f"attention {attn}, LoRA dropout {dropout}: {tokens / (time.perf_counter() - t):.0f} real tokens/s")


if __name__ == "__main__":
    main()
