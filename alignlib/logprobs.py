"""Log-probabilities of replies, and the nucleus (top-p) they were sampled from.

Top-p and the gradient. Replies are sampled from the nucleus (top_p) distribution: the
policy's softmax restricted to the smallest set of tokens whose probability reaches top_p,
renormalised. REINFORCE is unbiased only if the log-probability in the gradient is the one
of the distribution that was sampled, so `token_logprobs` returns the log-probabilities
under that renormalised nucleus distribution (log pi(y) - log Z_nucleus), the same rule as
transformers' `TopPLogitsWarper`. (Scoring top-p samples under the unfiltered softmax, as
many simple implementations do, biases the gradient towards pushing probability into the
tail that is never sampled.) The same `top_p_mask` decides the nucleus when sampling
(`rollout.NucleusWarper`) and in the gradient. The nucleus of a trained model is usually far
smaller than the vocabulary, so it sorts only the 512 most likely tokens, and the whole 49k
vocabulary only for the rare positions whose nucleus is larger. The KL penalty and the
reported KL to the SFT model use the unfiltered softmax of both models, the usual sample
estimate of KL(pi || pi_sft).

Pure functions of tensors; each is tested against a hand computation in tests/test_logprobs.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_p: float = 1.0,
                   temperature: float = 1.0) -> torch.Tensor:
    """log-probability of each token under softmax(logits / temperature), renormalised to the top-p set.

    The same distribution `rollout.NucleusWarper` samples from: temperature first, then the nucleus.

    Args:
        logits: (batch, len, vocab) the logits that predict `tokens` (already shifted).
        tokens: (batch, len) the tokens.
        top_p: 1.0 for the plain softmax; < 1 for the nucleus distribution it was sampled from.
        temperature: > 0; 1.0 leaves the logits as they are.
    Returns:
        (batch, len) log-probabilities. The sampled token is always kept in the nucleus (a
        float difference between sampling and this pass must not make it -inf).
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
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


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(batch, len, vocab) -> (batch, len) entropy of the unfiltered softmax, in nats."""
    logp = F.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)

