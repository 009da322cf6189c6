"""One REINFORCE experiment, end to end: train, evaluate against SFT, write the run record.

The notebooks call `reinforce_experiment` once per variant (EMA, RLOO, KL penalty, the
probabilistic reward modes) so that every variant is trained and judged in exactly the same way.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import evaluate, models, precision, reinforce, results
from .data import PreferencePair
from .rollout import encode_prompts


def unique_prompts(pairs: list[PreferencePair], tokenizer, max_prompt_tokens: int) -> tuple[list, int]:
    """Distinct prompts of `pairs` that fit the prompt budget; returns (prompts, n_skipped_too_long)."""
    seen, out, skipped = set(), [], 0
    for p in pairs:
        if p.prompt_key in seen:
            continue
        seen.add(p.prompt_key)
        if len(encode_prompts(tokenizer, [p.prompt])[0]) > max_prompt_tokens:
            skipped += 1
            continue
        out.append(list(p.prompt))
    return out, skipped


def evaluation_prompts(validation: list[PreferencePair], tokenizer, cfg) -> list:
    """The held-out prompts every policy is judged on: "Why is the sky blue?" and then the first
    distinct validation prompts that fit the prompt budget, `cfg.eval_prompts` in all."""
    val_prompts, _ = unique_prompts(validation, tokenizer, cfg.max_prompt_tokens)
    return [[{"role": "user", "content": "Why is the sky blue?"}]] + val_prompts[: cfg.eval_prompts - 1]


def rm_adapter_dir(profile: str, name: str = "rm_scalar") -> Path:
    """The reward model of this profile if notebook 02/04 trained one here, else the published cpu one."""
    local = results.checkpoints_dir(profile) / name
    if (local / "adapter_config.json").exists():
        return local
    return results.ROOT / "results" / "cpu" / "adapters" / name


def sft_reference(tokenizer, scorer, eval_prompts, cfg) -> dict:
    """The SFT policy's replies to the evaluation prompts, and their rewards."""
    sft = models.load_policy()
    gen = evaluate.generate_for_eval(sft, tokenizer, eval_prompts, cfg)
    gen["rewards"] = scorer(eval_prompts, gen["texts"]).numpy()
    return gen


def reinforce_experiment(name: str, profile, cfg, tokenizer, reward_fn, eval_scorer, train_prompts, eval_prompts,
                         sft_gen: dict, data_source: str, extra_config: dict | None = None) -> dict:
    """Train a fresh copy of the SFT policy with REINFORCE, evaluate it against SFT, record it.

    Training state is checkpointed under checkpoints/<profile>/<name>_state/: re-running after
    an interruption continues where it stopped (delete that folder to start over).

    Args:
        reward_fn: the training reward, (prompts, texts) -> (n,) tensor.
        eval_scorer: the reward used to judge SFT vs RL (E[p] or the scalar RM), same signature.
        sft_gen: `sft_reference` output for `eval_prompts` (shared by every variant).
    Returns:
        the run record (also written to results/<profile>/<name>.json).
    """
    clock = results.Timer()
    policy = models.load_policy()
    ref = models.load_policy()
    with results.PeakMemory() as mem:
        history = reinforce.train_reinforce(policy, tokenizer, reward_fn, train_prompts, cfg, ref_policy=ref,
                                            checkpoint_dir=results.checkpoints_dir(profile.name) / f"{name}_state")
    gen = evaluate.generate_for_eval(policy, tokenizer, eval_prompts, cfg)
    gen["rewards"] = eval_scorer(eval_prompts, gen["texts"]).numpy()
    metrics = evaluate.compare_policies(sft_gen["rewards"], gen["rewards"], sft_gen, gen)
    metrics["kl_to_sft"] = evaluate.kl_to_reference(policy, ref, tokenizer, eval_prompts, gen["tokens"], cfg)
    metrics.update(reinforce.summarize_history(history))
    metrics["peak_memory_train_mb"] = mem.peak_mb
    metrics["train_prompts"] = len(train_prompts)
    if profile.name != "smoke":  # the fine-tuned policy, for later use (git-ignored, ~0.5 GB)
        policy.save_pretrained(results.checkpoints_dir(profile.name) / f"policy_{name}")
    samples = [{"prompt": p[-1]["content"], "messages": p, "sft": s, "rl": r, "reward_sft": float(a),
                "reward_rl": float(b)}
               for p, s, r, a, b in zip(eval_prompts, sft_gen["texts"], gen["texts"], sft_gen["rewards"],
                                        gen["rewards"])]
    results.write_record(
        name, profile.name, model_source=models.source_of(policy), data_source=data_source, seed=cfg.seed,
        wall_time_s=clock.elapsed, config={"reinforce": asdict(cfg), **(extra_config or {})}, metrics=metrics, amp=cfg.amp,
        curve=history, samples=samples,
    )
    return results.read_record(name, profile.name)


def reward_model_experiment(name: str, profile, cfg, tokenizer, prefs, publish: bool = False) -> tuple[dict, object, dict]:
    """Train a reward model per `cfg`, evaluate it on the validation pairs, write its record.

    Returns (record, trained model, validation rewards as returned by `reward.pair_rewards`).
    """
    from . import reward

    clock = results.Timer()
    max_length = profile.data.max_length
    model = models.new_reward_model(cfg)
    with results.PeakMemory() as mem, results.Timer() as train_time:
        history = reward.train_reward_model(model, tokenizer, prefs.train, cfg, max_length,
                                            checkpoint_dir=results.checkpoints_dir(profile.name) / f"{name}_state")
    val = reward.pair_rewards(model, tokenizer, prefs.validation, max_length, cfg.eval_batch_size, cfg.amp,
                              progress=True)
    metrics = reward.pairwise_metrics(val["chosen"], val["rejected"])
    tokens = sum(history["tokens"])
    metrics.update({"train_pairs": len(prefs.train), "train_tokens_per_s": tokens / train_time.seconds,
                    "train_wall_time_s": train_time.seconds, "peak_memory_train_mb": mem.peak_mb,
                    "skipped_steps": precision.skipped_steps(history["grad_norm"])})
    metrics.update(evaluate.length_analysis(val["len_chosen"], val["len_rejected"], val["chosen"], val["rejected"]))
    if cfg.num_labels > 1:  # how the distributional head uses its scores, for notebook 04 and the report
        dist = evaluate.distribution_report(val["logits_chosen"], val["logits_rejected"])
        metrics.update({f"dist_{k}": v for k, v in dist.items()})
    ckpt = results.checkpoints_dir(profile.name) / name
    reward.save_reward_model(model, ckpt, max_length)
    adapter = ckpt
    if publish and profile.name != "smoke":
        adapter = results.results_dir(profile.name) / "adapters" / name
        reward.save_reward_model(model, adapter, max_length)
    results.write_record(
        name, profile.name, model_source=models.source_of(model), data_source=prefs.source, seed=cfg.seed,
        wall_time_s=clock.elapsed, config={"data": asdict(profile.data), "rm": asdict(cfg)}, metrics=metrics, amp=cfg.amp,
        curve=history, adapter=str(adapter.relative_to(results.ROOT)),
    )
    return results.read_record(name, profile.name), model, val


def judged_examples(prompt: list, replies: dict, judges: dict) -> list[dict]:
    """Replies of several policies to one prompt, each scored by every judge (rows for a table).

    Args:
        prompt: one chat-message list.
        replies: policy label -> reply text.
        judges: judge name -> scorer (prompts, texts) -> (n,) rewards.
    """
    labels, texts = list(replies), list(replies.values())
    scores = {judge: np.asarray(scorer([prompt] * len(texts), texts), float) for judge, scorer in judges.items()}
    return [{"policy": label, "reply": text, **{judge: float(s[i]) for judge, s in scores.items()}}
            for i, (label, text) in enumerate(zip(labels, texts))]
