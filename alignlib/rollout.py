"""Sampling replies from the policy, and the logits that predict them.

`sample` draws replies with the KV cache, temperature and top-p applied by `NucleusWarper`, which
keeps the same nucleus (`logprobs.top_p_mask`) that the policy gradient uses. `rollout_logits`
re-runs prompt + reply in one forward pass, with gradients when training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import precision
from .data import left_pad, policy_prompt_text, positions_from_mask
from .logprobs import response_mask, top_p_mask

# ---------------------------------------------------------------------------- sampling


@dataclass
class Rollout:
    """A batch of sampled replies, laid out as one left-padded prompt block + reply block."""
    prompts: list  # chat messages per row
    input_ids: torch.Tensor  # (batch, prompt_len + resp_len): [pad..., prompt | reply, pad...]
    attention_mask: torch.Tensor  # (batch, prompt_len + resp_len)
    resp_mask: torch.Tensor  # (batch, resp_len) 1 on reply tokens up to the first eos
    ended: torch.Tensor  # (batch,) bool: the reply closed its turn (eos) within the limit
    texts: list[str]  # decoded replies

    @property
    def resp_len(self) -> int:
        return self.resp_mask.shape[1]

    @property
    def lengths(self) -> torch.Tensor:
        return self.resp_mask.sum(-1)

    @property
    def reply_ids(self) -> torch.Tensor:
        """(batch, resp_len) the sampled reply tokens (eos-padded after the first eos)."""
        return self.input_ids[:, -self.resp_len:]


def encode_prompts(tokenizer, prompts, max_prompt_tokens: int | None = None) -> list[list[int]]:
    """Token ids of chat prompts (with the generation prompt); over-long prompts are an error."""
    if not prompts:
        return []
    ids = tokenizer([policy_prompt_text(tokenizer, p) for p in prompts], add_special_tokens=False)["input_ids"]
    if max_prompt_tokens is not None:
        long = [i for i, x in enumerate(ids) if len(x) > max_prompt_tokens]
        if long:
            raise ValueError(
                f"{len(long)} prompt(s) exceed max_prompt_tokens={max_prompt_tokens} "
                f"(first: index {long[0]}, {len(ids[long[0]])} tokens); shorten them or raise the budget"
            )
    return ids


class NucleusWarper:
    """transformers logits processor: temperature, then the top-p set of `top_p_mask`.

    Sampling and the policy gradient (`token_logprobs`) thus use the same nucleus rule and
    code. It replaces transformers' TopPLogitsWarper, which sorts the whole vocabulary at every
    generated token.
    """

    def __init__(self, top_p: float = 1.0, temperature: float = 1.0):
        if not 0.0 < top_p <= 1.0 or temperature <= 0.0:
            raise ValueError(f"need 0 < top_p <= 1 and temperature > 0, got top_p={top_p}, temperature={temperature}")
        self.top_p, self.temperature = top_p, temperature

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """scores: (batch, vocab) next-token logits -> the same with the tokens outside the nucleus at -inf."""
        if self.temperature != 1.0:
            scores = scores / self.temperature
        if self.top_p >= 1.0:
            return scores
        return scores.masked_fill(~top_p_mask(scores, self.top_p), float("-inf"))


class GumbelSampler:
    """transformers logits processor that draws the next token itself, by the Gumbel-max trick.

    argmax(logits + g), with g ~ Gumbel(0, 1) drawn for each vocabulary entry, is a sample of
    softmax(logits); the processor returns -inf everywhere but the drawn token, so greedy decoding
    emits it. The noise is drawn for the whole `global_rows`-row batch at every step, from a
    generator of its own seeded with `seed`, and the batch keeps rows `offset:offset + batch`: a
    row's reply depends on the seed and its row number only, not on which rows share its batch.
    Under `accelerate launch`, N processes that each sample a slice of an iteration's prompts thus
    draw exactly the replies one process draws for all of them (up to float rounding of the logits),
    and the caller's global random state is left untouched.
    """

    def __init__(self, seed: int, offset: int = 0, global_rows: int | None = None):
        self.seed, self.offset, self.global_rows, self.generator = seed, offset, global_rows, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """scores: (batch, vocab) warped logits -> (batch, vocab), 0 at the drawn token and -inf elsewhere."""
        if self.generator is None:
            self.generator = torch.Generator(scores.device).manual_seed(self.seed)
        rows = self.global_rows or scores.shape[0]
        u = torch.rand((rows, scores.shape[1]), generator=self.generator, device=scores.device)
        u = u[self.offset:self.offset + scores.shape[0]].clamp_min(torch.finfo(u.dtype).tiny)
        drawn = (scores.float() - torch.log(-torch.log(u))).argmax(-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


# new tokens beyond which a CPU samples with the static cache (the evaluation's long replies; training stays below)
LONG_REPLIES = 256


def kv_cache_for(device: torch.device, max_new_tokens: int | None = None) -> str:
    """The KV cache `sample` uses on `device` for replies of up to `max_new_tokens`: "static" on CUDA, and on a
    CPU for replies longer than LONG_REPLIES tokens; "dynamic" otherwise.

    On a GPU, a 135M model's decoding step is bound by kernel launches and Python, not arithmetic:
    a static cache lets transformers compile the step (torch.compile with CUDA graphs), which removes most of
    that overhead (`make gpu-check` times the first and the later iterations). On a CPU transformers does not
    compile. For the training replies (96 tokens at `cpu`) the two caches sample equally fast within run-to-run
    noise (`benchmarks/speed_profile.py` times them in interleaved pairs: results/speed_profile.json), and the
    dynamic cache, transformers' default, allocates only what a batch uses. The dynamic cache grows by
    concatenation, copying itself at every new token; for the evaluation's replies of up to a thousand tokens in
    batches of 32 that copying took most of the time (py-spy), and the static cache, written in place, sampled
    them about twice as fast on a 2-core CPU. Both give the same tokens for the same seed up to float rounding.
    """
    if device.type == "cuda":
        return "static"
    return "static" if max_new_tokens is not None and max_new_tokens > LONG_REPLIES else "dynamic"


def sample(model, tokenizer, prompts, max_new_tokens: int, top_p: float = 1.0, temperature: float = 1.0,
           do_sample: bool = True, seed: int | None = None, max_prompt_tokens: int | None = None,
           amp: str = "none", cache: str | None = None, shard: tuple[int, int] = (0, 1)) -> Rollout:
    """Sample one reply per prompt with the KV cache (prompts left-padded into one batch).

    Sampling applies temperature and top-p (`NucleusWarper`), then draws each token with
    `GumbelSampler` from `seed` (None: a seed drawn from torch's global generator). `shard` =
    (process index, number of processes) says that `prompts` is this process's slice of a batch
    split evenly over processes: the replies are then those one process would sample for the whole
    batch. `do_sample=False` decodes greedily.

    `cache` is "dynamic" or "static" (None: `kv_cache_for` the model's device and `max_new_tokens`). Both sample from the
    same distribution and give the same tokens for the same seed up to float rounding (attention over
    the static cache's longer, masked length sums in another order). A static cache is sized for
    `max_prompt_tokens + max_new_tokens` when the prompt budget is given, so that batches of other
    prompt lengths reuse it (and its compiled decoding step) instead of reallocating it.
    """
    ids = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    prompt_ids, prompt_mask = left_pad(ids, tokenizer.pad_token_id)
    dev = next(model.parameters()).device
    cache = cache or kv_cache_for(dev, max_new_tokens)
    if cache not in ("dynamic", "static"):
        raise ValueError(f"unknown KV cache {cache!r}; use 'dynamic' or 'static'")
    processors = []
    if do_sample:  # temperature, top-p and the draw by our processors (transformers' own warpers switched off)
        seed = int(torch.randint(2**62, ())) if seed is None else seed
        rank, world = shard
        processors = [NucleusWarper(top_p, temperature), GumbelSampler(seed, rank * len(ids), world * len(ids))]
    static = {}
    if cache == "static":
        width = max(prompt_ids.shape[1], max_prompt_tokens or 0)
        static = dict(cache_implementation="static", max_cache_len=width + max_new_tokens)
    # no_grad, not inference_mode: the sampled ids feed the training forward pass
    with torch.no_grad(), precision.autocast(amp, dev):
        out = model.generate(
            input_ids=prompt_ids.to(dev), attention_mask=prompt_mask.to(dev), max_new_tokens=max_new_tokens,
            do_sample=False, logits_processor=processors,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **static,
        ).cpu()
    reply = out[:, prompt_ids.shape[1]:]
    mask = response_mask(reply, tokenizer.eos_token_id)
    ended = (reply == tokenizer.eos_token_id).any(-1)
    texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True).strip() for r, m in zip(reply, mask)]
    attention = torch.cat([prompt_mask, mask.long()], dim=1)
    return Rollout(list(prompts), out, attention, mask, ended, texts)


def generate_replies(model, tokenizer, prompts, max_new_tokens: int = 128, do_sample: bool = True,
                     top_p: float = 0.9, temperature: float = 1.0, seed: int = 0,
                     max_prompt_tokens: int | None = None, amp: str = "none") -> list[str]:
    """Reply texts of `model` to chat prompts (see `sample`)."""
    return sample(model, tokenizer, prompts, max_new_tokens, top_p, temperature, do_sample, seed,
                  max_prompt_tokens, amp).texts


def from_replies(tokenizer, prompts, replies: list[list[int]]) -> Rollout:
    """The Rollout of given reply tokens to chat prompts, to score them with `rollout_logits`.

    Args:
        replies: per prompt, the reply's token ids (possibly empty), up to and including its
            end-of-turn token if it has one (as `evaluate.generate_for_eval` returns them).
    """
    prompt_ids, prompt_mask = left_pad(encode_prompts(tokenizer, prompts), tokenizer.pad_token_id)
    width = max(1, max(len(r) for r in replies))  # one column even when every reply is empty
    reply_ids = torch.full((len(replies), width), tokenizer.pad_token_id)
    resp_mask = torch.zeros((len(replies), width))
    for i, r in enumerate(replies):
        reply_ids[i, :len(r)] = torch.tensor(r)
        resp_mask[i, :len(r)] = 1
    ended = torch.tensor([len(r) > 0 and r[-1] == tokenizer.eos_token_id for r in replies])
    texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies]
    return Rollout(list(prompts), torch.cat([prompt_ids, reply_ids], 1), torch.cat([prompt_mask, resp_mask.long()], 1),
                   resp_mask, ended, texts)


def rollout_logits(model, roll: Rollout) -> torch.Tensor:
    """Logits that predict each reply token, from one forward pass over prompt + reply.

    Token t is predicted by position t-1, so the last resp_len + 1 positions are kept
    (`logits_to_keep`: no vocabulary projection on prompt positions) and the final one,
    which predicts past the end, is dropped.

    Returns:
        (batch, resp_len, vocab) logits.
    """
    dev = next(model.parameters()).device
    mask = roll.attention_mask.to(dev)
    out = model(input_ids=roll.input_ids.to(dev), attention_mask=mask, position_ids=positions_from_mask(mask),
                logits_to_keep=roll.resp_len + 1, use_cache=False)
    return out.logits[:, :-1]
