"""Sampling replies from the policy, and the log-probabilities REINFORCE needs.

Top-p and the gradient. Replies are sampled from the nucleus (top_p) distribution: the
policy's softmax restricted to the smallest set of tokens whose probability reaches top_p,
renormalised. REINFORCE is unbiased only if the log-probability in the gradient is the one
of the distribution that was sampled, so `token_logprobs` returns the log-probabilities
under that renormalised nucleus distribution (log pi(y) - log Z_nucleus), the same rule as
transformers' `TopPLogitsWarper`. (Scoring top-p samples under the unfiltered softmax, as
many simple implementations do, biases the gradient towards pushing probability into the
tail that is never sampled.) The same `top_p_mask` decides the nucleus when sampling
(`NucleusWarper`) and in the gradient. The nucleus of a trained model is usually far smaller
than the vocabulary, so it sorts only the 512 most likely tokens, and the whole 49k
vocabulary only for the rare positions whose nucleus is larger. The KL penalty and the
reported KL to the SFT model use the unfiltered softmax of both models, the usual sample
estimate of KL(pi || pi_sft).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import precision
from .data import left_pad, policy_prompt_text

# ------------------------------------------------------------------ pure tensor functions


def response_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Mask of the real reply tokens: everything up to and including the first end-of-turn.

    Args:
        tokens: (batch, resp_len) sampled reply tokens (after the first eos, generation pads
            with eos; a reply may also end without any eos when it hits the token limit).
    Returns:
        (batch, resp_len) float, 1 on tokens up to and including the first eos.
    """
    is_eos = (tokens == eos_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # number of eos strictly before each position
    return (eos_before == 0).float()


def top_p_mask(logits: torch.Tensor, top_p: float, candidates: int = 512) -> torch.Tensor:
    """Which tokens the nucleus keeps: the same rule as transformers' TopPLogitsWarper.

    A token is kept when the probability of the tokens strictly more likely than it is below
    top_p (so the most likely token is always kept). The warper finds this by sorting the whole
    vocabulary; here only the `candidates` most likely tokens are sorted (`topk`), and rows whose
    nucleus reaches beyond them fall back to the full sort. The two agree except at the boundary:
    where tokens tie with the last one kept, each keeps the ones its sort puts first, and the
    cumulative sums run in a different order.

    Args:
        logits: (..., vocab).
    Returns:
        (..., vocab) bool, True for the tokens inside the top-p set (at least one token).
    """
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab).float()
    top, idx = flat.softmax(-1).topk(min(candidates, vocab), dim=-1)  # sorted, most likely first
    mass_before = top.cumsum(-1) - top  # probability of the tokens more likely than each one
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, idx, mass_before < top_p)
    beyond = top.sum(-1) < top_p  # the candidates do not reach top_p: the nucleus is larger
    if beyond.any():
        keep[beyond] = top_p_mask_by_sort(flat[beyond], top_p)
    return keep.view(logits.shape)


def top_p_mask_by_sort(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """`top_p_mask` computed as TopPLogitsWarper does it: sort the whole vocabulary ascending,
    drop the tokens whose cumulative probability is <= 1 - top_p. (..., vocab) -> (..., vocab) bool."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove_sorted = cum <= (1 - top_p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
    return ~remove


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_p: float = 1.0) -> torch.Tensor:
    """log-probability of each token under softmax(logits), renormalised to the top-p set.

    Args:
        logits: (batch, len, vocab) the logits that predict `tokens` (already shifted).
        tokens: (batch, len) the tokens.
        top_p: 1.0 for the plain softmax; < 1 for the nucleus distribution it was sampled from.
    Returns:
        (batch, len) log-probabilities. The sampled token is always kept in the nucleus (a
        float difference between sampling and this pass must not make it -inf).
    """
    logits = logits.float()
    picked = logits.gather(-1, tokens[..., None])[..., 0]
    if top_p >= 1.0:
        return picked - torch.logsumexp(logits, -1)
    with torch.no_grad():
        keep = top_p_mask(logits, top_p)
        keep.scatter_(-1, tokens[..., None], True)
    return picked - torch.logsumexp(logits.masked_fill(~keep, float("-inf")), -1)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, len) values, (batch, len) 0/1 mask -> (batch,) sum over the masked positions."""
    return (values * mask).sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(batch, len) values, (batch, len) 0/1 mask -> () mean over all masked positions."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(batch, len, vocab) -> (batch, len) entropy of the unfiltered softmax, in nats."""
    logp = F.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


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


def encode_prompts(tokenizer, prompts, max_prompt_tokens: int | None = None) -> list[list[int]]:
    """Token ids of chat prompts (with the generation prompt); over-long prompts are an error."""
    ids = [tokenizer(policy_prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
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


def kv_cache_for(device: torch.device) -> str:
    """The KV cache `sample` uses on `device`: "static" on CUDA, "dynamic" elsewhere.

    On a GPU, a 135M model's decoding step is bound by kernel launches and Python, not arithmetic:
    a static cache lets transformers compile the step (torch.compile with CUDA graphs; issue 13 measured
    6 ms instead of 28-37 ms per step on an H100). On a CPU transformers does not compile, and the two
    caches sample equally fast within run-to-run noise (`benchmarks/speed_profile.py` times them in
    interleaved pairs: results/speed_profile.json), so a CPU keeps transformers' default, the dynamic
    cache, which allocates only what a batch uses.
    """
    return "static" if device.type == "cuda" else "dynamic"


@torch.no_grad()  # not inference_mode: the sampled ids feed the training forward pass
def sample(model, tokenizer, prompts, max_new_tokens: int, top_p: float = 1.0, temperature: float = 1.0,
           do_sample: bool = True, seed: int | None = None, max_prompt_tokens: int | None = None,
           amp: str = "none", cache: str | None = None) -> Rollout:
    """Sample one reply per prompt with the KV cache (prompts left-padded into one batch).

    `cache` is "dynamic" or "static" (None: `kv_cache_for` the model's device). Both sample from the
    same distribution and give the same tokens for the same seed up to float rounding (attention over
    the static cache's longer, masked length sums in another order). A static cache is sized for `max_prompt_tokens + max_new_tokens` when
    the prompt budget is given, so that batches of other prompt lengths reuse it (and its compiled
    decoding step) instead of reallocating it.
    """
    ids = encode_prompts(tokenizer, prompts, max_prompt_tokens)
    prompt_ids, prompt_mask = left_pad(ids, tokenizer.pad_token_id)
    dev = next(model.parameters()).device
    cache = cache or kv_cache_for(dev)
    if cache not in ("dynamic", "static"):
        raise ValueError(f"unknown KV cache {cache!r}; use 'dynamic' or 'static'")
    if seed is not None:
        torch.manual_seed(seed)
    # sampling: temperature and top-p by NucleusWarper (transformers' own warpers switched off)
    sampling = dict(top_p=1.0, top_k=0, temperature=1.0, logits_processor=[NucleusWarper(top_p, temperature)])
    static = {}
    if cache == "static":
        width = max(prompt_ids.shape[1], max_prompt_tokens or 0)
        static = dict(cache_implementation="static", max_cache_len=width + max_new_tokens)
    with precision.autocast(amp, dev):
        out = model.generate(
            input_ids=prompt_ids.to(dev), attention_mask=prompt_mask.to(dev), max_new_tokens=max_new_tokens,
            do_sample=do_sample, **(sampling if do_sample else {}), pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, **static,
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


def rollout_logits(model, roll: Rollout) -> torch.Tensor:
    """Logits that predict each reply token, from one forward pass over prompt + reply.

    Token t is predicted by position t-1, so the last resp_len + 1 positions are kept
    (`logits_to_keep`: no vocabulary projection on prompt positions) and the final one,
    which predicts past the end, is dropped.

    Returns:
        (batch, resp_len, vocab) logits.
    """
    from .reward import positions_from_mask

    dev = next(model.parameters()).device
    mask = roll.attention_mask.to(dev)
    out = model(input_ids=roll.input_ids.to(dev), attention_mask=mask, position_ids=positions_from_mask(mask),
                logits_to_keep=roll.resp_len + 1, use_cache=False)
    return out.logits[:, :-1]
