"""The prompts a policy trains on and is judged on, chosen the same way for every run."""

from __future__ import annotations

from .data import PreferencePair
from .rollout import encode_prompts

SKY = [{"role": "user", "content": "Why is the sky blue?"}]  # the original write-up's example prompt


def unique_prompts(pairs: list[PreferencePair], tokenizer, max_prompt_tokens: int) -> tuple[list, int]:
    """Distinct prompts of `pairs` (in order of first appearance) that fit the prompt budget; returns
    (prompts, n_skipped_too_long)."""
    distinct = list({p.prompt_key: list(p.prompt) for p in pairs}.values())
    fits = [len(ids) <= max_prompt_tokens for ids in encode_prompts(tokenizer, distinct)]
    return [p for p, ok in zip(distinct, fits) if ok], fits.count(False)


def evaluation_prompts(validation: list[PreferencePair], tokenizer, cfg) -> list:
    """The held-out prompts every policy is judged on: "Why is the sky blue?" and then the first
    distinct validation prompts that fit the prompt budget, `cfg.eval_prompts` in all."""
    val_prompts, _ = unique_prompts(validation, tokenizer, cfg.max_prompt_tokens)
    return [SKY] + val_prompts[: cfg.eval_prompts - 1]
