import pytest
import torch

from alignlib import data, logprobs, rollout

EOS = 2


@pytest.mark.parametrize("top_p, temperature", [(0.9, 1.0), (0.8, 0.7), (0.95, 2.0)])
def test_nucleus_warper_equals_transformers_warpers(top_p, temperature):
    """NucleusWarper keeps exactly the logits transformers' TemperatureLogitsWarper + TopPLogitsWarper keep."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = torch.randn(4, 300, generator=torch.Generator().manual_seed(0)) * 3
    theirs = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores))
    assert torch.equal(rollout.NucleusWarper(top_p, temperature)(None, scores), theirs)


def test_gumbel_sampler_draws_from_the_softmax():
    """Each call returns one finite entry per row, and over many draws the tokens follow softmax(scores)
    (-inf entries never drawn): frequencies within 4 standard errors of the probabilities."""
    scores = torch.tensor([[1.0, 0.0, -1.0, float("-inf"), 2.0]])
    sampler, draws = rollout.GumbelSampler(seed=0), 20_000
    out = torch.cat([sampler(None, scores.expand(100, -1)) for _ in range(draws // 100)])
    assert torch.equal(torch.isfinite(out).sum(-1), torch.ones(draws, dtype=torch.long))
    freq = torch.isfinite(out).float().mean(0)
    p = torch.softmax(scores[0], -1)
    assert freq[3] == 0
    assert torch.all((freq - p).abs() <= 4 * (p * (1 - p) / draws).sqrt() + 1e-9), (freq, p)


def test_a_rows_reply_does_not_depend_on_its_batch(tiny_policy, tokenizer):
    """Two processes that each sample half of a batch (shard = (rank, 2)) draw the replies one process
    draws for the whole batch: what makes N processes under `accelerate launch` equal one."""
    prompts = [[{"role": "user", "content": w}] for w in ("Hi", "Tell me about the sea", "Rain?", "Why")]
    whole = rollout.sample(tiny_policy, tokenizer, prompts, 10, top_p=0.9, temperature=0.8, seed=5)
    halves = [rollout.sample(tiny_policy, tokenizer, prompts[2 * r:2 * r + 2], 10, top_p=0.9, temperature=0.8,
                             seed=5, shard=(r, 2)) for r in (0, 1)]
    assert whole.texts == halves[0].texts + halves[1].texts
    alone = rollout.sample(tiny_policy, tokenizer, prompts[2:], 10, top_p=0.9, temperature=0.8, seed=5)
    assert alone.texts != whole.texts[2:]  # without the shard, the rows would draw another batch's noise
    state = torch.get_rng_state()
    rollout.sample(tiny_policy, tokenizer, prompts, 4, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded draw leaves the global generator alone


def test_nucleus_warper_scales_then_filters():
    scores = torch.tensor([[2.0, 1.0, 0.0]])
    warped = rollout.NucleusWarper(top_p=0.9, temperature=0.5)(None, scores)
    # logits / 0.5 = [4, 2, 0] -> p = [0.867, 0.117, 0.016]: the top two reach 0.9
    assert warped[0, :2].tolist() == [4.0, 2.0] and warped[0, 2].item() == float("-inf")
    scores = torch.randn(2, 50)
    assert torch.equal(rollout.NucleusWarper()(None, scores), scores)  # by default: the plain softmax
    for bad in (dict(top_p=0.0), dict(top_p=1.5), dict(temperature=0.0), dict(temperature=-1.0)):
        with pytest.raises(ValueError, match="need 0 < top_p <= 1 and temperature > 0"):
            rollout.NucleusWarper(**bad)


def test_reply_logprobs_with_left_padding_match_one_by_one(tiny_policy, tokenizer):
    """Batched, left-padded prompts and replies of different lengths (one ended early) give the
    same summed reply log-probs as each prompt + reply run alone."""
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A longer question, please answer"}]]
    roll = rollout.sample(tiny_policy, tokenizer, prompts, max_new_tokens=6, seed=0)
    # force an early end in row 0 to test masking after the first eos
    roll.input_ids[0, -4] = tokenizer.eos_token_id
    roll.resp_mask = logprobs.response_mask(roll.input_ids[:, -roll.resp_len:], tokenizer.eos_token_id)
    prompt_width = roll.input_ids.shape[1] - roll.resp_len
    roll.attention_mask[:, prompt_width:] = roll.resp_mask.long()
    targets = roll.input_ids[:, -roll.resp_len:]
    with torch.no_grad():
        batched = logprobs.masked_sum(logprobs.token_logprobs(rollout.rollout_logits(tiny_policy, roll), targets),
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
    assert rollout.kv_cache_for(torch.device("cpu"), 96) == "dynamic"  # the training replies
    assert rollout.kv_cache_for(torch.device("cpu"), 1024) == "static"  # the evaluation's: no copy of the cache per token
    assert rollout.kv_cache_for(torch.device("cuda")) == "static" == rollout.kv_cache_for(torch.device("cuda"), 96)
    with pytest.raises(ValueError, match="unknown KV cache 'paged'"):
        rollout.sample(tiny_policy, tokenizer, batches[1], 2, cache="paged")


def test_from_replies_lays_out_given_replies_as_sample_does(tokenizer):
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A longer question"}]]
    hello, yes = tokenizer.encode("Hello"), tokenizer.encode("Yes")[:1]
    replies = [hello + [tokenizer.eos_token_id], yes]
    roll = rollout.from_replies(tokenizer, prompts, replies)
    width = len(hello) + 1
    assert roll.prompts == prompts and roll.resp_len == width and roll.reply_ids.dtype == torch.long
    assert roll.reply_ids.tolist() == [replies[0], yes + [tokenizer.pad_token_id] * len(hello)]
    assert roll.resp_mask.tolist() == [[1.0] * width, [1.0] + [0.0] * len(hello)]
    assert roll.lengths.tolist() == [width, 1]
    prompt_ids = rollout.encode_prompts(tokenizer, prompts)
    assert roll.attention_mask[:, -width:].tolist() == roll.resp_mask.long().tolist()
    assert roll.attention_mask[:, :-width].sum(-1).tolist() == [len(p) for p in prompt_ids]
    assert roll.input_ids[1, -width - len(prompt_ids[1]):-width].tolist() == prompt_ids[1]
    assert roll.ended.tolist() == [True, False] and roll.texts == ["Hello", "Yes"]
    empty = rollout.from_replies(tokenizer, prompts, [[], [tokenizer.eos_token_id]])  # no reply; a bare end of turn
    assert empty.resp_len == 1 and empty.resp_mask.sum() == 1 and empty.ended.tolist() == [False, True]


def test_generate_replies_are_the_texts_of_sample(tiny_policy, tokenizer):
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me a story"}]]
    texts = rollout.generate_replies(tiny_policy, tokenizer, prompts, max_new_tokens=5, top_p=0.8, temperature=0.7, seed=3)
    roll = rollout.sample(tiny_policy, tokenizer, prompts, 5, 0.8, 0.7, seed=3)
    assert texts == roll.texts and len(texts) == 2
    greedy = rollout.generate_replies(tiny_policy, tokenizer, prompts, max_new_tokens=5, do_sample=False)
    assert greedy == rollout.sample(tiny_policy, tokenizer, prompts, 5, do_sample=False).texts
    assert greedy != texts
    defaults = rollout.generate_replies(tiny_policy, tokenizer, prompts[:1])  # 128 new tokens, top-p 0.9, seed 0
    assert defaults == rollout.sample(tiny_policy, tokenizer, prompts[:1], 128, 0.9, 1.0, seed=0).texts
    with pytest.raises(ValueError, match="exceed max_prompt_tokens=4"):
        rollout.generate_replies(tiny_policy, tokenizer, prompts, max_new_tokens=2, max_prompt_tokens=4)


def test_sample_hands_generate_the_padding_mask_and_a_budget_sized_static_cache(tiny_policy, tokenizer, monkeypatch):
    """What `sample` asks of transformers' generate. The left-padding mask (a tiny random model's replies
    barely change without it, so it is checked here), and with the static cache, one sized for the
    prompt budget + the new tokens, so that batches of other widths reuse it."""
    seen, original = {}, tiny_policy.generate

    def spy(**kwargs):
        seen.clear()
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(tiny_policy, "generate", spy)
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me about the sea and rain"}]]
    _, mask = data.left_pad(rollout.encode_prompts(tokenizer, prompts), tokenizer.pad_token_id)
    rollout.sample(tiny_policy, tokenizer, prompts, 5, seed=0, max_prompt_tokens=64, cache="static")
    assert torch.equal(seen["attention_mask"], mask) and mask[0, 0] == 0
    assert seen["cache_implementation"] == "static" and seen["max_cache_len"] == 64 + 5
    rollout.sample(tiny_policy, tokenizer, prompts, 5, seed=0, cache="static")  # no budget: this batch's width
    assert seen["max_cache_len"] == mask.shape[1] + 5
    rollout.sample(tiny_policy, tokenizer, prompts, 5, seed=0, cache="dynamic")
    assert "cache_implementation" not in seen and torch.equal(seen["attention_mask"], mask)


def test_unseeded_sampling_draws_from_the_global_generator_and_defaults_to_the_plain_softmax(tiny_policy, tokenizer):
    prompts = [[{"role": "user", "content": "Hi"}]] * 3
    draws = []
    for global_seed in (7, 7, 8):
        torch.manual_seed(global_seed)
        draws.append(rollout.sample(tiny_policy, tokenizer, prompts, 6).texts)
    assert draws[0] == draws[1] and draws[0] != draws[2]
    with torch.no_grad():  # sharper logits than a random init's, so that a temperature of 2 shows
        tiny_policy.lm_head.weight.mul_(40)
    plain = rollout.sample(tiny_policy, tokenizer, prompts, 6, seed=4).texts
    assert plain == rollout.sample(tiny_policy, tokenizer, prompts, 6, top_p=1.0, temperature=1.0, seed=4).texts
    assert plain != rollout.sample(tiny_policy, tokenizer, prompts, 6, top_p=1.0, temperature=2.0, seed=4).texts


def test_sample_lays_out_a_known_generation(tiny_policy, tokenizer, monkeypatch):
    """sample's bookkeeping on a generation fixed by hand: the first reply ends (eos, then eos padding)
    with a special token inside, the second runs to the limit."""
    prompts = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "A longer question"}]]
    hello, world = tokenizer.encode("Hello")[0], tokenizer.encode(" world")[0]
    eos, start = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_start|>")
    replies = torch.tensor([[hello, start, world, eos, eos], [hello, world, hello, world, hello]])
    monkeypatch.setattr(tiny_policy, "generate", lambda **kw: torch.cat([kw["input_ids"], replies], 1))
    roll = rollout.sample(tiny_policy, tokenizer, prompts, 5, seed=0)
    _, prompt_mask = data.left_pad(rollout.encode_prompts(tokenizer, prompts), tokenizer.pad_token_id)
    assert roll.prompts == prompts and torch.equal(roll.reply_ids, replies)
    assert roll.resp_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]  # up to and including the first eos
    assert roll.ended.tolist() == [True, False] and roll.lengths.tolist() == [4, 5]
    assert torch.equal(roll.attention_mask, torch.cat([prompt_mask, roll.resp_mask.long()], 1))
    assert roll.texts == ["Hello world", "Hello worldHello worldHello"]  # special tokens left out
