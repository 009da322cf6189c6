"""The log-probabilities of replies and the top-p nucleus, against hand computations and transformers."""

import math

import pytest
import torch

from alignlib import logprobs

EOS = 2


def test_response_mask_stops_after_first_eos():
    tokens = torch.tensor([[5, EOS, EOS], [5, 6, 7], [EOS, 9, EOS]])
    assert logprobs.response_mask(tokens, EOS).tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]


def test_token_logprobs_plain_and_nucleus_by_hand():
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.log().view(1, 1, 3)
    tok = lambda t: torch.tensor([[t]])
    assert logprobs.token_logprobs(logits, tok(1)).item() == pytest.approx(math.log(0.3))
    # top_p = 0.7: sorted ascending 0.2, 0.3, 0.5 -> cumulative 0.2, 0.5, 1.0; drop cum <= 0.3 -> {0.3, 0.5}
    assert logprobs.token_logprobs(logits, tok(1), top_p=0.7).item() == pytest.approx(math.log(0.3 / 0.8))
    assert logprobs.top_p_mask(logits, 0.7)[0, 0].tolist() == [True, True, False]
    # top_p = 0.5 keeps {0.5} only ...
    assert logprobs.top_p_mask(logits, 0.5)[0, 0].tolist() == [True, False, False]
    assert logprobs.token_logprobs(logits, tok(0), top_p=0.5).item() == pytest.approx(0.0, abs=1e-6)
    # ... but a sampled token is never -inf: it joins the set
    assert logprobs.token_logprobs(logits, tok(1), top_p=0.5).item() == pytest.approx(math.log(0.3 / 0.8))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_token_logprobs_at_a_temperature_by_hand(temperature):
    """softmax(log p / T) is p^(1/T) renormalised."""
    probs = torch.tensor([0.5, 0.3, 0.2])
    tempered = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
    got = logprobs.token_logprobs(probs.log().view(1, 1, 3), torch.tensor([[1]]), temperature=temperature)
    assert got.item() == pytest.approx(math.log(tempered[1].item()), abs=1e-6)


def test_top_p_mask_matches_transformers_warper():
    from transformers.generation.logits_process import TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    warped = TopPLogitsWarper(0.9)(None, logits.clone())
    assert torch.equal(logprobs.top_p_mask(logits, 0.9), torch.isfinite(warped))
    assert torch.equal(logprobs.top_p_mask_by_sort(logits, 0.9), torch.isfinite(warped))


def test_top_p_mask_candidates_and_fallback_match_the_full_sort():
    """Flat rows need more than `candidates` tokens (full-sort fallback), peaked rows fewer;
    a (2, 3, vocab) batch mixes both and keeps its shape."""
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 400)
    logits[0] *= 8  # peaked: a nucleus of a few tokens
    logits[1] *= 0.5  # flat: hundreds of tokens
    reference = logprobs.top_p_mask_by_sort(logits, 0.9)
    sizes = reference.sum(-1)
    assert sizes[0].max() < 20 and sizes[1].min() > 40
    fast = logprobs.top_p_mask(logits, 0.9, candidates=20)
    assert fast.shape == logits.shape and torch.equal(fast, reference)
    # in the peaked rows (top token above 1%), a top_p of 0.01 keeps exactly the most likely token, in both
    peaked = logits[0]
    assert peaked.softmax(-1).max(-1).values.min() > 0.01
    for mask in (logprobs.top_p_mask_by_sort(peaked, 0.01), logprobs.top_p_mask(peaked, 0.01)):
        assert torch.equal(mask, torch.nn.functional.one_hot(peaked.argmax(-1), 400).bool())


def test_top_p_mask_differs_from_the_sort_only_among_tied_tokens():
    """bf16 logits tie often; at the boundary the warper keeps the tied tokens its sort puts
    first. Any difference must be a token tied with the reference's least likely kept token."""
    torch.manual_seed(2)
    logits = (torch.randn(64, 1000) * 4).bfloat16().float()  # many exact ties
    fast, reference = logprobs.top_p_mask(logits, 0.9, candidates=100), logprobs.top_p_mask_by_sort(logits, 0.9)
    boundary = logits.masked_fill(~reference, float("inf")).amin(-1, keepdim=True).expand_as(logits)
    differ = fast != reference
    assert differ.any()  # this seed has ties at the boundary (8 tokens)
    assert torch.equal(logits[differ], boundary[differ])


def test_masked_sum():
    v, m = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert logprobs.masked_sum(v, m).tolist() == [3.0, 4.0]


def test_entropy_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.5, 1e-30]]]))
    assert logprobs.entropy_from_logits(logits).item() == pytest.approx(math.log(2), abs=1e-6)

