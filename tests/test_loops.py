"""Behaviour of the two training loops as wholes: the numbers they compute from each other, worked
out by hand, and what training must do to a model (the rewarded token rises, the preferred reply's
score rises). The pure functions they call have their own tests; these guard the wiring between them.

The tests observe the loops from outside: through the models and functions they hand in (forward
hooks on the policy record its gradient pass; a reward function sees each iteration), the history,
the weights and the checkpoint directory, never through the names a loop module imports."""

import copy
import inspect
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from alignlib import checkpoint, config, evaluate, reinforce_loop, reward_model_loop, rollout, scoring
from test_reward import toy_pairs

PROMPTS = [[{"role": "user", "content": f"Tell me about {w}"}] for w in ("cats", "dogs", "rain", "tea")]


def smoke_rl(**changes):
    settings = dict(iterations=2, prompts_per_iter=2, max_new_tokens=4, lr=1e-3, amp="none") | changes
    return config.with_overrides(config.get_profile("smoke").reinforce, **settings)


def scripted_reward(values):
    """A reward function that returns the given rewards, one batch per call."""
    batches = iter(values)
    return lambda prompts, texts: torch.tensor(next(batches), dtype=torch.float32)


class GradientPasses:
    """The forward passes through `model` that a loop differentiates (with `every`: all its passes), recorded by a
    forward hook on the model the test hands to the loop.

    For each pass: `reply_ids` (batch, resp_len) the replies it scored, `mask` (batch, resp_len) their attention
    mask (1 on each reply's own tokens), `logits` (batch, resp_len, vocab) the logits that predict them, and, once
    the loop has run its backward pass, `grad`: the gradient of the loop's loss with respect to those logits.
    (`rollout.rollout_logits` keeps resp_len + 1 positions, the last predicting past the reply, and drops it.)
    """

    def __init__(self, model, every: bool = False):
        self.passes, self.every = [], every
        model.register_forward_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs, out):
        if not (self.every or torch.is_grad_enabled()):
            return  # sampling: no gradient
        resp_len = out.logits.shape[1] - 1
        seen = SimpleNamespace(reply_ids=kwargs["input_ids"][:, -resp_len:].cpu(),
                               mask=kwargs["attention_mask"][:, -resp_len:].cpu(),
                               logits=out.logits[:, :-1].detach().float().clone(), grad=None)
        if out.logits.requires_grad:
            out.logits.register_hook(lambda grad: setattr(seen, "grad", grad[:, :-1].clone()))
        self.passes.append(seen)


def logprobs_of_warper(scores, temperature, top_p):
    """(batch, vocab) next-token logits -> log-probabilities of the distribution NucleusWarper samples."""
    return torch.log_softmax(rollout.NucleusWarper(top_p, temperature)(None, scores), -1)


def reply_logprobs_by_hand(logits, reply_ids, mask, top_p=1.0, temperature=1.0):
    """(batch,) log pi(y) of each reply, summed over its own tokens (mask), under the distribution it was sampled
    from: temperature and nucleus applied by the sampling code's own warper, position by position."""
    batch, length, vocab = logits.shape
    warped = logprobs_of_warper(logits.reshape(batch * length, vocab), temperature, top_p).view(batch, length, vocab)
    picked = warped.gather(-1, reply_ids[..., None])[..., 0]
    return torch.where(mask.bool(), picked, 0.0).sum(-1)


def assert_reinforce_gradient(seen, advantages, top_p=1.0, temperature=1.0):
    """The gradient the loop took at the pass's logits is that of -mean_i(A_i * log pi(y_i)), with the
    advantages `advantages` given by the test and log pi(y_i) by hand (`reply_logprobs_by_hand`)."""
    logits = seen.logits.clone().requires_grad_()
    loss = -(torch.as_tensor(advantages, dtype=torch.float32)
             * reply_logprobs_by_hand(logits, seen.reply_ids, seen.mask, top_p, temperature)).mean()
    loss.backward()
    scale = float(logits.grad.abs().max())
    assert scale > 0
    torch.testing.assert_close(seen.grad, logits.grad, rtol=1e-3, atol=1e-3 * scale)


def kl_by_hand(policy_pass, ref_pass):
    """(batch,) sum over each reply's own tokens of log pi(y_t) - log pi_ref(y_t) (unfiltered softmax)."""
    logp, ref_logp = (torch.log_softmax(p.logits, -1).gather(-1, p.reply_ids[..., None])[..., 0]
                      for p in (policy_pass, ref_pass))
    return ((logp - ref_logp) * policy_pass.mask).sum(-1)


# ------------------------------------------------------------------------------ REINFORCE wiring


def test_ema_advantages_of_two_iterations_by_hand(tiny_policy, tokenizer):
    """Iteration 0: b = its own mean 2, A = [-1, 1]. Iteration 1: b = the EMA after iteration 0 (2,
    not yet updated with this batch), A = [5, 7] - 2 = [3, 5]; the EMA then becomes 0.9*2 + 0.1*6 = 2.4.
    Each step's gradient is the one of -mean(A * log pi(y)) with these advantages."""
    passes = GradientPasses(tiny_policy)
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3], [5, 7]]), PROMPTS,
                                          smoke_rl(ema_alpha=0.9, top_p=1.0, temperature=1.0), progress=False)
    assert hist["advantage/baseline"] == [2.0, 2.0]
    assert hist["advantage/mean"] == [0.0, 4.0] and hist["advantage/sq_mean"] == [1.0, 17.0]
    assert hist["reward/mean"] == [2.0, 6.0]
    assert len(passes.passes) == 2
    for seen, advantages, logged_loss in zip(passes.passes, ([-1.0, 1.0], [3.0, 5.0]), hist["train/loss"]):
        assert_reinforce_gradient(seen, advantages)
        seq_logp = reply_logprobs_by_hand(seen.logits, seen.reply_ids, seen.mask)
        assert (seq_logp < 0).all()
        assert logged_loss == pytest.approx(-(torch.tensor(advantages) * seq_logp).mean().item(), rel=1e-4)


def test_without_a_baseline_the_advantage_is_the_reward_itself(tiny_policy, tokenizer):
    """baseline "none": rewards [1, 3] then [5, 7] are the advantages as they are; nothing is subtracted, so
    every term of the gradient estimate carries the whole reward (E[A^2] = 5, then 37, against 1 and 17 with EMA)."""
    passes = GradientPasses(tiny_policy)
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3], [5, 7]]), PROMPTS,
                                          smoke_rl(baseline="none", top_p=1.0, temperature=1.0), progress=False)
    assert hist["advantage/baseline"] == [0.0, 0.0]
    assert hist["advantage/mean"] == [2.0, 6.0] and hist["advantage/sq_mean"] == [5.0, 37.0]
    for seen, advantages in zip(passes.passes, ([1.0, 3.0], [5.0, 7.0])):
        assert_reinforce_gradient(seen, advantages)


def test_rloo_advantages_by_hand(tiny_policy, tokenizer):
    """k = 2 replies per prompt, adjacent: rewards [1, 3 | 5, 9] -> baselines [3, 1 | 9, 5]."""
    passes = GradientPasses(tiny_policy)
    cfg = smoke_rl(iterations=1, baseline="rloo", samples_per_prompt=2, top_p=1.0, temperature=1.0)
    asked = []

    def reward(prompts, texts):
        asked.append(prompts)
        return torch.tensor([1.0, 3.0, 5.0, 9.0])

    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, reward, PROMPTS, cfg, progress=False)
    prompts = asked[0]  # the reward model sees each reply's prompt: two prompts, each twice, adjacent
    assert len(prompts) == 4 and prompts[0] == prompts[1] != prompts[2] == prompts[3] and prompts[0] in PROMPTS
    assert_reinforce_gradient(passes.passes[0], [-2.0, 2.0, -4.0, 4.0])
    assert hist["advantage/baseline"] == [4.5]


def test_the_kl_penalty_shapes_the_reward_before_the_baseline(tokenizer, policy_pair):
    """With beta > 0, the advantage is (r - beta * KL) - b, and the EMA follows the shaped rewards; the KL of
    each reply is worked out here from the logits of the policy's gradient pass and of the reference's pass."""
    policy, ref = policy_pair
    passes, ref_passes = GradientPasses(policy), GradientPasses(ref, every=True)
    beta = 0.5
    hist = reinforce_loop.train_reinforce(policy, tokenizer, scripted_reward([[1, 3], [5, 7]]), PROMPTS,
                                          smoke_rl(kl_beta=beta, top_p=1.0, temperature=1.0), ref_policy=ref,
                                          progress=False)
    kl0, kl1 = (kl_by_hand(p, r) for p, r in zip(passes.passes, ref_passes.passes, strict=True))
    assert kl0.abs().max() > 0.01 and kl1.abs().max() > 0.01  # the two models differ
    assert hist["kl/to_sft"] == pytest.approx([float(kl0.mean()), float(kl1.mean())], abs=1e-5)
    shaped0, shaped1 = torch.tensor([1.0, 3.0]) - beta * kl0, torch.tensor([5.0, 7.0]) - beta * kl1
    b1 = shaped0.mean()  # first batch: its own mean; and the EMA after it is that mean
    assert hist["advantage/baseline"] == pytest.approx([float(b1), float(b1)], abs=1e-5)
    assert_reinforce_gradient(passes.passes[0], shaped0 - b1)
    assert_reinforce_gradient(passes.passes[1], shaped1 - b1)


def test_the_gradient_uses_the_distribution_the_replies_were_sampled_from(tiny_policy, tokenizer):
    """log pi(y) in the loss is the log-probability under temperature and the nucleus, as sampled:
    the gradient the loop took is the one worked out with the warper that sampling used, and not the
    one without the temperature, nor the one without the nucleus."""
    temperature, top_p = 0.7, 0.6
    with torch.no_grad():  # less flat distributions: a nucleus of hundreds of tokens, not of most of the vocabulary
        tiny_policy.lm_head.weight.mul_(12)
    passes = GradientPasses(tiny_policy)
    cfg = smoke_rl(iterations=1, temperature=temperature, top_p=top_p, lr=0.0)
    reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[0.0, 1.0]]), PROMPTS, cfg, progress=False)
    seen, advantages = passes.passes[0], [-0.5, 0.5]
    assert_reinforce_gradient(seen, advantages, top_p, temperature)
    for other in ({"top_p": top_p}, {"temperature": temperature}):  # temperature left out; the nucleus left out
        with pytest.raises(AssertionError):
            assert_reinforce_gradient(seen, advantages, **other)  # each matters here


def scripted_generate(replies):
    """A stand-in for a policy's `generate`: each batch gets the reply tokens `replies` (batch, resp_len), whatever
    the sampling settings, so that a test chooses where each reply ends and what follows its end."""

    def generate(input_ids, max_new_tokens, **settings):
        assert input_ids.shape[0] == replies.shape[0] and max_new_tokens == replies.shape[1]
        return torch.cat([input_ids, replies.to(input_ids.device)], 1)

    return generate


def test_what_follows_a_replys_end_changes_neither_the_update_nor_the_logged_kl_and_entropy(tokenizer, policy_pair):
    """One batch of four replies: three close their turn after 2, 4 and 6 tokens, one is cut off at the cap of 6.
    Whatever follows a reply's end (the end-of-turn padding generation writes, or either of two sets of random
    tokens, with whatever the model predicts there), the update is the same to the bit, and so is every logged
    number; the logged KL and entropy are those of the replies' own tokens, worked out here one reply at a time,
    without padding. A change inside a reply does change the update: the comparison can tell."""
    eos, cap, lengths = tokenizer.eos_token_id, 6, [2, 4, 6, 6]  # lengths include the end-of-turn; the last has none
    policy, ref = policy_pair
    with torch.no_grad():  # peaked distributions: each token's log-probability ratio to the reference is large
        for model in policy_pair:
            model.lm_head.weight.mul_(8)

    def random_tokens(seed):
        return torch.randint(100, len(tokenizer), (4, cap), generator=torch.Generator().manual_seed(seed))

    replies = random_tokens(0)
    after_end = torch.arange(cap) >= torch.tensor(lengths)[:, None]  # (4, cap): positions after each reply's end
    for row, n in enumerate(lengths[:3]):
        replies[row, n - 1] = eos
    variants = {"eos padding": replies.masked_fill(after_end, eos),
                "random tokens": torch.where(after_end, random_tokens(1), replies),
                "other random tokens": torch.where(after_end, random_tokens(2), replies)}
    assert not torch.equal(variants["random tokens"], variants["other random tokens"])
    cfg = smoke_rl(iterations=1, prompts_per_iter=4, max_new_tokens=cap, kl_beta=0.5)

    def train(reply_tokens):
        trained, asked = copy.deepcopy(policy), []
        trained.generate = scripted_generate(reply_tokens)

        def reward(prompts, texts):
            asked.append(prompts)
            return torch.tensor([1.0, 3.0, 0.0, 2.0])

        hist = reinforce_loop.train_reinforce(trained, tokenizer, reward, PROMPTS, cfg, ref_policy=ref, progress=False)
        return {k: v for k, v in hist.items() if not k.startswith("time/")}, list(trained.parameters()), asked[0]

    runs = {name: train(tokens) for name, tokens in variants.items()}
    hist, weights, prompts = runs["eos padding"]
    assert hist["response/length"] == [4.5] and hist["response/ended_frac"] == [0.75]  # the replies as scripted
    assert any(not torch.equal(w, p) for w, p in zip(weights, policy.parameters(), strict=True))  # the step moved it
    for name, (other_hist, other_weights, _) in runs.items():
        assert other_hist == hist, name
        assert all(torch.equal(a, b) for a, b in zip(other_weights, weights, strict=True)), name
    inside = variants["eos padding"].clone()
    inside[1, 1] = (inside[1, 1] + 1) % len(tokenizer)  # one token of a reply's own, not after its end
    assert any(not torch.equal(a, b) for a, b in zip(train(inside)[1], weights, strict=True))

    kl, entropy = [], []
    for prompt, reply, n in zip(prompts, variants["random tokens"], lengths):
        ids = rollout.encode_prompts(tokenizer, [prompt])[0] + reply[:n].tolist()
        with torch.no_grad():
            lp, lq = (torch.log_softmax(m(torch.tensor([ids])).logits[0, :-1], -1) for m in (policy, ref))
        at, own = torch.arange(len(ids) - n - 1, len(ids) - 1), reply[:n]  # the positions predicting the reply
        kl.append(float((lp[at, own] - lq[at, own]).sum()))
        entropy.append(float(-(lp[at].exp() * lp[at]).sum()))
    logged = runs["random tokens"][0]  # (float rounding: the loop's batch is padded, these are not)
    assert logged["kl/to_sft"] == [pytest.approx(np.mean(kl), abs=1e-5)]
    assert logged["policy/entropy"] == [pytest.approx(sum(entropy) / sum(lengths), abs=1e-5)]  # per reply token


def bandit_policy(tokenizer, good: int, bad: int):
    """A tiny policy whose next token is almost always one of two: a fixed bias of +20 on their logits."""
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config(tokenizer)
    cfg.tie_word_embeddings = False
    policy = LlamaForCausalLM(cfg).eval()
    bias = torch.zeros(len(tokenizer))
    bias[[good, bad]] = 20.0
    policy.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    return policy


def first_token_probs(policy, tokenizer, tokens):
    """(len(tokens),) mean over PROMPTS of the probability of each token as the first reply token."""
    roll = rollout.from_replies(tokenizer, PROMPTS, [[tokens[0]]] * len(PROMPTS))
    with torch.no_grad():
        probs = rollout.rollout_logits(policy, roll)[:, 0].softmax(-1)
    return probs[:, tokens].mean(0)


def test_two_token_bandit_the_rewarded_token_rises(tokenizer):
    good, bad = tokenizer.encode("yes")[0], tokenizer.encode("no")[0]
    policy = bandit_policy(tokenizer, good, bad)
    reward = lambda prompts, texts: torch.tensor([1.0 if t.startswith("yes") else -1.0 for t in texts])
    before = first_token_probs(policy, tokenizer, [good, bad])
    assert before.sum() > 0.99 and 0.1 < before[0] < 0.9  # a two-armed bandit, both arms sampled
    cfg = smoke_rl(iterations=6, prompts_per_iter=4, max_new_tokens=1, lr=3e-2, top_p=1.0)
    reinforce_loop.train_reinforce(policy, tokenizer, reward, PROMPTS, cfg, progress=False)
    after = first_token_probs(policy, tokenizer, [good, bad])
    assert after[0] > before[0] + 0.2 and after[1] < before[1] - 0.2


# --------------------------------------------------------------------------------- evaluation


@pytest.fixture
def policy_pair(tokenizer):
    """Two different tiny policies (a 'trained' one and its 'reference')."""
    from transformers import LlamaForCausalLM

    from conftest import tiny_config

    torch.manual_seed(0)
    a = LlamaForCausalLM(tiny_config(tokenizer)).eval()
    torch.manual_seed(1)
    b = LlamaForCausalLM(tiny_config(tokenizer)).eval()
    return a, b


def test_kl_to_reference_equals_the_sum_computed_one_reply_at_a_time(tokenizer, policy_pair):
    policy, ref = policy_pair
    prompts = PROMPTS[:3]
    replies = [[11, 12, 13, tokenizer.eos_token_id], [21], [31, 32]]  # of different lengths: batches get padded
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, eval_batch_size=2, amp="none")
    per_reply = []
    for prompt, reply in zip(prompts, replies):
        ids = rollout.encode_prompts(tokenizer, [prompt])[0] + reply
        with torch.no_grad():
            lp, lq = (torch.log_softmax(m(torch.tensor([ids])).logits[0, :-1], -1) for m in (policy, ref))
        pos = torch.arange(len(ids) - len(reply) - 1, len(ids) - 1)  # positions that predict the reply tokens
        targets = torch.tensor(reply)
        per_reply.append(float((lp[pos, targets] - lq[pos, targets]).sum()))
    kl = evaluate.kl_to_reference(policy, ref, tokenizer, prompts, replies, cfg)
    assert kl == pytest.approx(np.mean(per_reply), abs=1e-4)
    assert evaluate.kl_to_reference(ref, policy, tokenizer, prompts, replies, cfg) != pytest.approx(kl)


# ------------------------------------------------------------------------------ reward-model loop


def test_the_preferred_replys_score_rises_on_a_separable_set(tiny_rm, tokenizer):
    """Chosen replies are helpful sentences, rejected ones a word: the loop must widen every margin."""
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, lr=5e-3, batch_size=4, max_steps=None,
                                epochs=4, warmup_steps=1, amp="none")
    model = tiny_rm(seed=2)
    pairs = toy_pairs()
    before = scoring.pair_rewards(model, tokenizer, pairs, 128)
    hist = reward_model_loop.train_reward_model(model, tokenizer, pairs, cfg, max_length=128, progress=False)
    after = scoring.pair_rewards(model, tokenizer, pairs, 128)
    margin_before, margin_after = before["chosen"] - before["rejected"], after["chosen"] - after["rejected"]
    assert (margin_after > margin_before).all() and (margin_after > 0).all()
    assert np.mean(hist["train/loss"][-3:]) < np.mean(hist["train/loss"][:3])
    assert hist["train/accuracy"][-1] == 1.0
    lr = hist["optim/lr"]  # warm-up of one step, then linear decay to 0 at the last of 12 steps
    assert lr[0] == pytest.approx(cfg.lr) and lr[-1] == pytest.approx(cfg.lr / 11) and lr == sorted(lr, reverse=True)


def test_warmup_then_linear_decay_by_hand():
    factor = reward_model_loop.warmup_then_linear_decay
    assert [factor(s, 2, 6) for s in range(7)] == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    assert [factor(s, 1, 2) for s in range(3)] == pytest.approx([1.0, 1.0, 0.0])
    assert [factor(s, 0, 4) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert factor(9, 2, 6) == 0.0  # past the end: 0, not negative


def test_each_rm_step_is_the_step_worked_out_by_hand(tiny_rm, tokenizer):
    """Three optimizer steps of 3 accumulated micro-batches of 2 pairs, over 2 epochs of 10 pairs
    (10 micro-batches: the 10th is left over), replayed outside the loop: the same batches, the
    mean of the micro-batch losses, clipping, AdamW with weight decay on the warm-up/decay schedule.
    The logged loss, accuracy, tokens, lr and grad norm, and the final weights, must be the replay's."""
    import copy

    from alignlib.data import encode_pair, length_bucketed_batches
    from alignlib.losses import reward_model_loss
    from alignlib.packing import pack_pairs

    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, batch_size=2, grad_accum=3, epochs=2,
                                max_steps=None, lr=2e-2, weight_decay=0.3, warmup_steps=2, max_grad_norm=0.5,
                                center_coef=0.1, lora_dropout=0.0, amp="none", seed=5)
    model, pairs = tiny_rm(seed=3, lora_dropout=0.0), toy_pairs()[:10]
    replay = copy.deepcopy(model).train()
    start = time.perf_counter()
    hist = reward_model_loop.train_reward_model(model, tokenizer, pairs, cfg, max_length=128, progress=False)
    elapsed = time.perf_counter() - start

    encoded = [encode_pair(tokenizer, p, 128) for p in pairs]
    lengths = [len(e.prompt) + len(e.chosen) + len(e.rejected) for e in encoded]
    batches = [b for epoch in (0, 1) for b in length_bucketed_batches(lengths, 2, seed=5 + epoch)]
    params = [p for p in replay.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: reward_model_loop.warmup_then_linear_decay(s, 2, 3))
    heads = scoring.HeadAt(replay)
    expected = {key: [] for key in ("train/loss", "train/accuracy", "train/tokens", "optim/lr", "optim/grad_norm")}
    for step in range(3):
        loss_sum, right, tokens = 0.0, 0, 0
        for batch in batches[3 * step:3 * step + 3]:
            packed = pack_pairs([encoded[i] for i in batch], tokenizer.pad_token_id)
            logits_c, logits_r = scoring.pair_logits(heads, packed)
            loss = reward_model_loss("bradley_terry", logits_c, logits_r, 0.0, 0.1)
            (loss / 3).backward()
            loss_sum += loss.item() * len(batch)
            right += int((logits_c[:, 0] > logits_r[:, 0]).sum())
            tokens += packed.n_tokens
        expected["train/loss"].append(loss_sum / 6)
        expected["train/accuracy"].append(right / 6)
        expected["train/tokens"].append(tokens)
        expected["optim/lr"].append(sched.get_last_lr()[0])
        expected["optim/grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(params, 0.5)))
        opt.step()
        opt.zero_grad()
        sched.step()

    assert hist["step"] == [1, 2, 3]
    for key, values in expected.items():
        assert hist[key] == pytest.approx(values, rel=1e-12, abs=0), key
    assert 0 < min(expected["train/accuracy"]) and max(expected["train/accuracy"]) < 1  # the counts can tell
    assert all(0 < t for t in hist["time/step"]) and sum(hist["time/step"]) < elapsed
    for (name, got), want in zip(((n, p) for n, p in model.named_parameters() if p.requires_grad), params):
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_the_rm_loop_logs_one_row_per_step_with_every_key(tiny_rm, tokenizer):
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, batch_size=4, max_steps=None, grad_accum=1)
    hist = reward_model_loop.train_reward_model(tiny_rm(), tokenizer, toy_pairs(), cfg, max_length=128, progress=False)
    assert set(hist) == set(reward_model_loop.HISTORY_KEYS) and hist["step"] == [1, 2, 3]
    assert all(len(v) == 3 for v in hist.values())
    assert all(t > 0 for t in hist["train/tokens"]) and all(g > 0 for g in hist["optim/grad_norm"])


# ------------------------------------------------------------------------ what each iteration logs


def test_each_iteration_logs_what_it_sampled_and_how_long_each_part_took(tiny_policy, tokenizer):
    passes = GradientPasses(tiny_policy)
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3], [5, 9]]), PROMPTS,
                                          smoke_rl(max_new_tokens=3), progress=False)
    eos = tokenizer.eos_token_id
    assert [p.reply_ids.shape[1] for p in passes.passes] == [3, 3]  # max_new_tokens (a random model rarely ends)
    assert hist["response/length"] == pytest.approx([float(p.mask.sum(-1).float().mean()) for p in passes.passes])
    assert hist["response/ended_frac"] == pytest.approx([float((p.reply_ids == eos).any(-1).float().mean())
                                                         for p in passes.passes])
    assert hist["reward/std"] == pytest.approx([2 ** 0.5, 8 ** 0.5])
    assert hist["optim/lr"] == [1e-3, 1e-3] and all(g > 0 for g in hist["optim/grad_norm"])
    assert all(0 < e < np.log(len(tokenizer)) for e in hist["policy/entropy"])
    for i in range(2):
        parts = hist["time/generate"][i] + hist["time/score"][i] + hist["time/backward"][i]
        assert min(hist["time/generate"][i], hist["time/score"][i], hist["time/backward"][i]) >= 0
        assert parts == pytest.approx(hist["time/step"][i], abs=1e-6)


def test_truncated_replies_pay_the_truncation_penalty(tiny_policy, tokenizer):
    eos_bias = torch.zeros(len(tokenizer))
    eos_bias[tokenizer.eos_token_id] = 9.5  # about one chance in five to end the turn at each token
    tiny_policy.lm_head.register_forward_hook(lambda module, args, out: out + eos_bias)
    passes = GradientPasses(tiny_policy)
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3, 5, 7]]), PROMPTS,
                                          smoke_rl(iterations=1, prompts_per_iter=4, max_new_tokens=2, top_p=1.0,
                                                   temperature=1.0, truncation_penalty=0.5), progress=False)
    ended = (passes.passes[0].reply_ids == tokenizer.eos_token_id).any(-1).float()
    assert 0 < ended.sum() < 4  # some replies ended their turn, some were cut off
    penalised = torch.tensor([1.0, 3.0, 5.0, 7.0]) - 0.5 * (1 - ended)  # only the cut-off replies pay
    assert hist["reward/mean"] == [pytest.approx(float(penalised.mean()))]
    assert hist["advantage/baseline"] == [pytest.approx(float(penalised.mean()))]  # the EMA starts from them
    assert_reinforce_gradient(passes.passes[0], penalised - penalised.mean())


def test_the_kl_is_measured_every_kl_log_every_iterations_and_at_the_end(tokenizer, policy_pair):
    policy, ref = policy_pair
    hist = reinforce_loop.train_reinforce(policy, tokenizer, scripted_reward([[1, 3]] * 4), PROMPTS,
                                          smoke_rl(iterations=4, kl_log_every=2), ref_policy=ref, progress=False)
    measured = [kl is not None for kl in hist["kl/to_sft"]]
    assert measured == [True, False, True, True]
    assert all(abs(kl) > 1e-3 for kl in hist["kl/to_sft"] if kl is not None)  # two different models
    penalised = reinforce_loop.train_reinforce(policy, tokenizer, scripted_reward([[1, 3]] * 4), PROMPTS,
                                               smoke_rl(iterations=4, kl_log_every=2, kl_beta=0.5), ref_policy=ref,
                                               progress=False)
    assert all(kl is not None for kl in penalised["kl/to_sft"])  # a penalty needs the KL at every iteration


def test_prompts_over_the_budget_stop_the_loop(tiny_policy, tokenizer):
    with pytest.raises(ValueError, match="exceed max_prompt_tokens=8"):
        reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3]]), PROMPTS,
                                       smoke_rl(iterations=1, max_prompt_tokens=8), progress=False)


# ------------------------------------------------------------------ resuming, in process and exact


class Interrupted(Exception):
    pass


def newest_checkpoint(directory):
    """The step folder LATEST names, or None before the first checkpoint."""
    path = checkpoint.latest(directory)
    return None if path is None else path.name


def test_the_reinforce_loop_checkpoints_every_checkpoint_every_iterations_and_at_the_end(tiny_policy, tokenizer,
                                                                                         tmp_path):
    """What the checkpoint directory holds when each iteration scores its replies, and at the end."""
    seen = []

    def reward(prompts, texts):
        seen.append(newest_checkpoint(tmp_path))
        return torch.tensor([1.0, 3.0])

    reinforce_loop.train_reinforce(tiny_policy, tokenizer, reward, PROMPTS, smoke_rl(iterations=4),
                                   progress=False, checkpoint_dir=tmp_path, checkpoint_every=3)
    assert seen + [newest_checkpoint(tmp_path)] == [None, None, None, "step-0000003", "step-0000004"]


def test_the_default_checkpoint_cadences_are_the_configs():
    every = lambda train: inspect.signature(train).parameters["checkpoint_every"].default  # noqa: E731
    assert every(reinforce_loop.train_reinforce) == config.REINFORCE_CHECKPOINT_EVERY
    assert every(reward_model_loop.train_reward_model) == config.RM_CHECKPOINT_EVERY


def test_the_entropy_is_per_reply_token_even_for_a_single_token(tiny_policy, tokenizer):
    """One prompt, one new token: the logged entropy is that of the policy's distribution at that token."""
    from alignlib import logprobs

    prompt = PROMPTS[:1]
    with torch.no_grad():
        ids = rollout.encode_prompts(tokenizer, prompt)[0]
        expected = float(logprobs.entropy_from_logits(tiny_policy(torch.tensor([ids])).logits[:, -1]))
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1.0]]), prompt,
                                          smoke_rl(iterations=1, prompts_per_iter=1, max_new_tokens=1), progress=False)
    assert hist["response/length"] == [1.0] and hist["policy/entropy"] == [pytest.approx(expected, rel=1e-4)]
    assert hist["advantage/var"] == [0.0] and hist["reward/std"] == [0.0]  # one reply: no spread, and no NaN


def test_an_interrupted_reinforce_run_resumes_to_the_same_history_and_weights(tokenizer, tmp_path):
    from test_reinforce import toy_reward

    from alignlib import machine

    cfg = smoke_rl(iterations=3)

    def run(reward_fn, checkpoint_dir=None):
        from transformers import LlamaForCausalLM

        from conftest import tiny_config

        torch.manual_seed(0)
        policy = LlamaForCausalLM(tiny_config(tokenizer)).eval()
        machine.seed_everything(cfg.seed)
        hist = reinforce_loop.train_reinforce(policy, tokenizer, reward_fn, PROMPTS, cfg, progress=False,
                                              checkpoint_dir=checkpoint_dir, checkpoint_every=2)
        return hist, policy

    whole, policy_whole = run(toy_reward)
    calls = []

    def dies_at_the_third_batch(prompts, texts):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return toy_reward(prompts, texts)

    with pytest.raises(Interrupted):
        run(dies_at_the_third_batch, tmp_path)  # a checkpoint after 2 iterations
    calls.clear()

    def counts_batches(prompts, texts):
        calls.append(1)
        return toy_reward(prompts, texts)

    resumed, policy_resumed = run(counts_batches, tmp_path)
    assert len(calls) == 1  # only the third iteration is run again
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith("time/")}
    assert strip(resumed) == strip(whole) and resumed["step"] == [1, 2, 3]
    for a, b in zip(policy_whole.parameters(), policy_resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_a_finished_reinforce_run_extends_to_the_longer_run_and_refuses_to_shrink(tokenizer, tmp_path):
    """2 iterations, then the same run asked for 3: only the third is trained, and the result is the
    3-iteration run's (the KL is measured at the end of each part, the only difference)."""
    from test_reinforce import toy_reward

    from alignlib import checkpoint, machine

    def run(iterations, checkpoint_dir=None):
        from transformers import LlamaForCausalLM

        from conftest import tiny_config

        torch.manual_seed(0)
        policy = LlamaForCausalLM(tiny_config(tokenizer)).eval()
        machine.seed_everything(0)
        hist = reinforce_loop.train_reinforce(policy, tokenizer, toy_reward, PROMPTS, smoke_rl(iterations=iterations),
                                              progress=False, checkpoint_dir=checkpoint_dir, checkpoint_every=10)
        return hist, policy

    whole, policy_whole = run(3)
    run(2, tmp_path)
    extended, policy_extended = run(3, tmp_path)
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith("time/")}
    assert strip(extended) == strip(whole) and extended["step"] == [1, 2, 3]
    for a, b in zip(policy_whole.parameters(), policy_extended.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(checkpoint.CheckpointMismatch, match="past this run's last step 2"):
        run(2, tmp_path)


def before_each_rm_forward(model, fn):
    """Call fn() before each forward pass of the reward model (one per micro-batch)."""
    model.get_input_embeddings().register_forward_pre_hook(lambda module, args: fn())


def test_the_rm_loop_checkpoints_every_checkpoint_every_steps_and_at_the_end(tiny_rm, tokenizer, tmp_path):
    """3 steps of one micro-batch each: what the checkpoint directory holds at each step's forward pass, and at
    the end."""
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, batch_size=4, max_steps=None, amp="none")
    model, seen = tiny_rm(), []
    before_each_rm_forward(model, lambda: seen.append(newest_checkpoint(tmp_path)))
    reward_model_loop.train_reward_model(model, tokenizer, toy_pairs()[:12], cfg, max_length=128, progress=False,
                                         checkpoint_dir=tmp_path, checkpoint_every=2)
    assert seen + [newest_checkpoint(tmp_path)] == [None, None, "step-0000002", "step-0000003"]  # the 2nd, the last


def test_an_interrupted_reward_model_run_resumes_to_the_same_history(tiny_rm, tokenizer, tmp_path):
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, lr=5e-3, batch_size=4, max_steps=None,
                                epochs=2, warmup_steps=2, lora_dropout=0.3, amp="none")
    calls = []

    def run(checkpoint_dir=None, on_forward=lambda: None):
        model = tiny_rm(seed=1, lora_dropout=0.3)
        before_each_rm_forward(model, on_forward)
        hist = reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), cfg, max_length=128, progress=False,
                                                    checkpoint_dir=checkpoint_dir, checkpoint_every=2)
        return hist, model

    def dies_at_the_fifth_batch():
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted

    whole, model_whole = run()
    with pytest.raises(Interrupted):
        run(tmp_path, dies_at_the_fifth_batch)  # a checkpoint after 4 steps
    calls.clear()
    resumed, model_resumed = run(tmp_path, lambda: calls.append(1))
    assert len(calls) == 2  # only steps 5 and 6 are run again
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith("time/")}
    assert strip(resumed) == strip(whole) and resumed["step"] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(model_whole.parameters(), model_resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_no_signal_no_update_the_policy_stays_where_it_is(tiny_policy, tokenizer):
    """Equal rewards give zero advantages under either baseline, so the step must leave every weight as it
    was (no weight decay, nothing but the policy gradient moves the policy)."""
    before = [p.detach().clone() for p in tiny_policy.parameters()]
    for changes in ({}, {"baseline": "rloo", "samples_per_prompt": 2}):
        reinforce_loop.train_reinforce(tiny_policy, tokenizer, lambda prompts, texts: torch.ones(len(texts)), PROMPTS,
                                       smoke_rl(**changes), progress=False)
    for a, b in zip(before, tiny_policy.parameters()):
        assert torch.equal(a, b)


def test_the_replies_depend_on_the_run_seed_not_on_the_global_random_state(tokenizer, policy_pair):
    from test_reinforce import toy_reward

    def run(global_seed):
        from transformers import LlamaForCausalLM

        from conftest import tiny_config

        torch.manual_seed(0)
        policy = LlamaForCausalLM(tiny_config(tokenizer)).eval()
        torch.manual_seed(global_seed)
        return reinforce_loop.train_reinforce(policy, tokenizer, toy_reward, PROMPTS, smoke_rl(), progress=False)

    strip = lambda h: {k: v for k, v in h.items() if not k.startswith("time/")}
    assert strip(run(1)) == strip(run(2))


def test_every_forward_pass_of_the_loop_runs_in_the_configured_precision(tokenizer, policy_pair, monkeypatch):
    """Sampling, the gradient pass and the reference pass all run under the config's autocast."""
    monkeypatch.delenv("ALIGNLIB_AMP", raising=False)
    policy, ref = policy_pair
    seen = {"policy": [], "ref": []}
    for name, model in (("policy", policy), ("ref", ref)):
        model.model.register_forward_pre_hook(lambda module, args, name=name: seen[name].append(
            torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
    reinforce_loop.train_reinforce(policy, tokenizer, scripted_reward([[1, 3]]), PROMPTS,
                                   smoke_rl(iterations=1, amp="bf16", kl_beta=0.1), ref_policy=ref, progress=False)
    assert len(seen["policy"]) > 2 and set(seen["policy"]) == {torch.bfloat16}  # each decoding step + the gradient pass
    assert seen["ref"] == [torch.bfloat16]
