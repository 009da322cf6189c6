import math

import pytest
import torch

from alignlib import rollout

EOS = 2


def test_response_mask_stops_after_first_eos():
    tokens = torch.tensor([[5, EOS, EOS], [5, 6, 7], [EOS, 9, EOS]])
    assert rollout.response_mask(tokens, EOS).tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]]


def test_token_logprobs_plain_and_nucleus_by_hand():
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = probs.log().view(1, 1, 3)
    tok = lambda t: torch.tensor([[t]])
    assert rollout.token_logprobs(logits, tok(1)).item() == pytest.approx(math.log(0.3))
    # top_p = 0.7: sorted ascending 0.2, 0.3, 0.5 -> cumulative 0.2, 0.5, 1.0; drop cum <= 0.3 -> {0.3, 0.5}
    assert rollout.token_logprobs(logits, tok(1), top_p=0.7).item() == pytest.approx(math.log(0.3 / 0.8))
    assert rollout.top_p_mask(logits, 0.7)[0, 0].tolist() == [True, True, False]
    # top_p = 0.5 keeps {0.5} only ...
    assert rollout.top_p_mask(logits, 0.5)[0, 0].tolist() == [True, False, False]
    assert rollout.token_logprobs(logits, tok(0), top_p=0.5).item() == pytest.approx(0.0, abs=1e-6)
    # ... but a sampled token is never -inf: it joins the set
    assert rollout.token_logprobs(logits, tok(1), top_p=0.5).item() == pytest.approx(math.log(0.3 / 0.8))


def test_top_p_mask_matches_transformers_warper():
    from transformers.generation.logits_process import TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    warped = TopPLogitsWarper(0.9)(None, logits.clone())
    assert torch.equal(rollout.top_p_mask(logits, 0.9), torch.isfinite(warped))
    assert torch.equal(rollout.top_p_mask_by_sort(logits, 0.9), torch.isfinite(warped))


def test_top_p_mask_candidates_and_fallback_match_the_full_sort():
    """Flat rows need more than `candidates` tokens (full-sort fallback), peaked rows fewer;
    a (2, 3, vocab) batch mixes both and keeps its shape."""
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 400)
    logits[0] *= 8  # peaked: a nucleus of a few tokens
    logits[1] *= 0.5  # flat: hundreds of tokens
    reference = rollout.top_p_mask_by_sort(logits, 0.9)
    sizes = reference.sum(-1)
    assert sizes[0].max() < 20 and sizes[1].min() > 40
    fast = rollout.top_p_mask(logits, 0.9, candidates=20)
    assert fast.shape == logits.shape and torch.equal(fast, reference)


def test_top_p_mask_differs_from_the_sort_only_among_tied_tokens():
    """bf16 logits tie often; at the boundary the warper keeps the tied tokens its sort puts
    first. Any difference must be a token tied with the reference's least likely kept token."""
    torch.manual_seed(2)
    logits = (torch.randn(64, 1000) * 4).bfloat16().float()  # many exact ties
    fast, reference = rollout.top_p_mask(logits, 0.9, candidates=100), rollout.top_p_mask_by_sort(logits, 0.9)
    boundary = logits.masked_fill(~reference, float("inf")).amin(-1, keepdim=True).expand_as(logits)
    differ = fast != reference
    assert differ.any()  # this seed has ties at the boundary (8 tokens)
    assert torch.equal(logits[differ], boundary[differ])


@pytest.mark.parametrize("top_p, temperature", [(0.9, 1.0), (0.8, 0.7)])
def test_sampling_matches_transformers_warpers(tiny_policy, tokenizer, top_p, temperature):
    """NucleusWarper samples exactly what transformers' TemperatureLogitsWarper + TopPLogitsWarper
    sample from the same seed (float32 logits: no ties at the nucleus boundary)."""
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me about the sea"}]]
    ours = rollout.sample(tiny_policy, tokenizer, prompts, max_new_tokens=12, top_p=top_p,
                          temperature=temperature, seed=3)
    ids, mask = rollout.left_pad(rollout.encode_prompts(tokenizer, prompts), tokenizer.pad_token_id)
    torch.manual_seed(3)
    theirs = tiny_policy.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=True,
                                  top_p=top_p, top_k=0, temperature=temperature,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    assert torch.equal(ours.input_ids, theirs)


def test_nucleus_warper_scales_then_filters():
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    warped = rollout.NucleusWarper(top_p=0.9, temperature=0.5)(None, scores)
    # logits / 0.5 = [4, 2, 0] -> p = [0.867, 0.117, 0.016]: the top two reach 0.9
    assert warped[0, :2].tolist() == [4.0, 2.0] and warped[0, 2].item() == float("-inf")
    with pytest.raises(ValueError, match="top_p"):
        rollout.NucleusWarper(top_p=0.0)


def test_masked_sum_and_mean():
    v, m = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert rollout.masked_sum(v, m).tolist() == [3.0, 4.0]
    assert rollout.masked_mean(v, m).item() == pytest.approx(7.0 / 3)


def test_entropy_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.5, 1e-30]]]))
    assert rollout.entropy_from_logits(logits).item() == pytest.approx(math.log(2), abs=1e-6)


def test_reply_logprobs_with_left_padding_match_one_by_one(tiny_policy, tokenizer):
    """Batched, left-padded prompts and replies of different lengths (one ended early) give the
    same summed reply log-probs as each prompt + reply run alone."""
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A longer question, please answer"}]]
    roll = rollout.sample(tiny_policy, tokenizer, prompts, max_new_tokens=6, seed=0)
    # force an early end in row 0 to test masking after the first eos
    roll.input_ids[0, -4] = tokenizer.eos_token_id
    roll.resp_mask = rollout.response_mask(roll.input_ids[:, -roll.resp_len:], tokenizer.eos_token_id)
    prompt_width = roll.input_ids.shape[1] - roll.resp_len
    roll.attention_mask[:, prompt_width:] = roll.resp_mask.long()
    targets = roll.input_ids[:, -roll.resp_len:]
    with torch.no_grad():
        batched = rollout.masked_sum(rollout.token_logprobs(rollout.rollout_logits(tiny_policy, roll), targets),
                                     roll.resp_mask)
        for i in range(2):
            keep = roll.attention_mask[i].bool()
            ids = roll.input_ids[i][keep][None]
            n_reply = int(roll.resp_mask[i].sum())
            logp = torch.log_softmax(tiny_policy(input_ids=ids).logits[0], -1)
            # token t is predicted by position t - 1
            by_hand = sum(logp[t - 1, ids[0, t]] for t in range(ids.shape[1] - n_reply, ids.shape[1]))
            assert batched[i].item() == pytest.approx(by_hand.item(), abs=1e-4)
    assert roll.resp_mask[0].sum() == 3


def test_sampling_is_seeded(tiny_policy, tokenizer):
    prompts = [[{"role": "user", "content": "Hi"}]] * 3
    a = rollout.sample(tiny_policy, tokenizer, prompts, 5, top_p=0.9, seed=1).texts
    b = rollout.sample(tiny_policy, tokenizer, prompts, 5, top_p=0.9, seed=1).texts
    c = rollout.sample(tiny_policy, tokenizer, prompts, 5, top_p=0.9, seed=2).texts
    assert a == b and a != c


@pytest.mark.parametrize("do_sample", [True, False])
def test_static_cache_gives_the_same_tokens_as_the_dynamic_cache(tiny_policy, tokenizer, do_sample):
    """The static cache (used on GPUs, where transformers compiles the decoding step) must not change
    what is sampled: same seed, same tokens, for prompts of different lengths in one batch and for a
    second batch of another width that reuses the cache."""
    batches = [[[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me about the sea and rain"}]],
               [[{"role": "user", "content": "Why is the sky blue? Explain it in two short sentences please."}]]]
    for prompts in batches:
        runs = [rollout.sample(tiny_policy, tokenizer, prompts, 12, top_p=0.9, do_sample=do_sample, seed=3,
                               max_prompt_tokens=64, cache=cache) for cache in ("dynamic", "static")]
        assert torch.equal(runs[0].input_ids, runs[1].input_ids) and runs[0].texts == runs[1].texts
        assert runs[0].resp_len > 0
    assert rollout.kv_cache_for(torch.device("cpu")) == "dynamic"
    assert rollout.kv_cache_for(torch.device("cuda")) == "static"
    with pytest.raises(ValueError, match="unknown KV cache 'paged'"):
        rollout.sample(tiny_policy, tokenizer, batches[1], 2, cache="paged")
