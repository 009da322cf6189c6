"""Sampling replies from the policy on chat-formatted prompts."""

from __future__ import annotations

import torch

from .data import left_pad, policy_prompt_text


@torch.inference_mode()
def generate_replies(model, tokenizer, prompts, max_new_tokens: int = 128, do_sample: bool = True,
                     top_p: float = 0.9, temperature: float = 1.0, seed: int = 0,
                     max_prompt_tokens: int | None = None) -> list[str]:
    """Replies of `model` to each chat prompt (a list of messages), decoded up to <|im_end|>.

    Prompts are left-padded into one batch; generation uses the KV cache. `seed` fixes the
    sampling so that two policies can be compared on the same random stream.
    """
    ids = [tokenizer(policy_prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_tokens is not None:
        long = [i for i, x in enumerate(ids) if len(x) > max_prompt_tokens]
        if long:
            raise ValueError(
                f"{len(long)} prompt(s) exceed max_prompt_tokens={max_prompt_tokens} "
                f"(first: index {long[0]}, {len(ids[long[0]])} tokens); shorten them or raise the budget"
            )
    input_ids, mask = left_pad(ids, tokenizer.pad_token_id)
    dev = next(model.parameters()).device
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=input_ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
        do_sample=do_sample, top_p=top_p if do_sample else None, top_k=0 if do_sample else None,
        temperature=temperature if do_sample else None, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return [tokenizer.decode(row[input_ids.shape[1]:], skip_special_tokens=True).strip() for row in out]
