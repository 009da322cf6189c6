"""Behaviour of the two training loops as wholes: the numbers they compute from each other, worked
out by hand, and what training must do to a model (the rewarded token rises, the preferred reply's
score rises). The pure functions they call have their own tests; these guard the wiring between them."""

import time

import numpy as np
import pytest
import torch

from alignlib import config, evaluate, logprobs, reinforce_loop, reward_model_loop, rollout, scoring
from test_reward import toy_pairs

PROMPTS = [[{"role": "user", "content": f"Tell me about {w}"}] for w in ("cats", "dogs", "rain", "tea")]


def smoke_rl(**changes):
    settings = dict(iterations=2, prompts_per_iter=2, max_new_tokens=4, lr=1e-3, amp="none") | changes
    return config.with_overrides(config.get_profile("smoke").reinforce, **settings)


class Recorder:
    """Wraps a function of the loop's module and keeps the arguments and result of each call."""

    def __init__(self, monkeypatch, module, name):
        self.calls, fn = [], getattr(module, name)

        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.calls.append((args, out))
            return out

        monkeypatch.setattr(module, name, wrapped)


def scripted_reward(values):
    """A reward function that returns the given rewards, one batch per call."""
    batches = iter(values)
    return lambda prompts, texts: torch.tensor(next(batches), dtype=torch.float32)


# ------------------------------------------------------------------------------ REINFORCE wiring


def test_ema_advantages_of_two_iterations_by_hand(tiny_policy, tokenizer, monkeypatch):
    """Iteration 0: b = its own mean 2, A = [-1, 1]. Iteration 1: b = the EMA after iteration 0 (2,
    not yet updated with this batch), A = [5, 7] - 2 = [3, 5]; the EMA then becomes 0.9*2 + 0.1*6 = 2.4."""
    loss = Recorder(monkeypatch, reinforce_loop, "reinforce_loss")
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3], [5, 7]]), PROMPTS,
                                          smoke_rl(ema_alpha=0.9), progress=False)
    advantages = [args[1].tolist() for args, _ in loss.calls]
    assert advantages == [[-1.0, 1.0], [3.0, 5.0]]
    assert hist["advantage/baseline"] == [2.0, 2.0]
    assert hist["advantage/mean"] == [0.0, 4.0] and hist["advantage/sq_mean"] == [1.0, 17.0]
    assert hist["reward/mean"] == [2.0, 6.0]
    for (seq_logp, adv), out in loss.calls:  # the loss the step minimised is -mean(A * log pi(y))
        assert out.item() == pytest.approx(-(adv * seq_logp.detach()).mean().item())
        assert (seq_logp < 0).all() and seq_logp.requires_grad


def test_rloo_advantages_by_hand(tiny_policy, tokenizer, monkeypatch):
    """k = 2 replies per prompt, adjacent: rewards [1, 3 | 5, 9] -> baselines [3, 1 | 9, 5]."""
    loss = Recorder(monkeypatch, reinforce_loop, "reinforce_loss")
    cfg = smoke_rl(iterations=1, baseline="rloo", samples_per_prompt=2)
    asked = []

    def reward(prompts, texts):
        asked.append(prompts)
        return torch.tensor([1.0, 3.0, 5.0, 9.0])

    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, reward, PROMPTS, cfg, progress=False)
    prompts = asked[0]  # the reward model sees each reply's prompt: two prompts, each twice, adjacent
    assert len(prompts) == 4 and prompts[0] == prompts[1] != prompts[2] == prompts[3] and prompts[0] in PROMPTS
    assert loss.calls[0][0][1].tolist() == [-2.0, 2.0, -4.0, 4.0]
    assert hist["advantage/baseline"] == [4.5]


def test_the_kl_penalty_shapes_the_reward_before_the_baseline(tokenizer, policy_pair, monkeypatch):
    """With beta > 0, the advantage is (r - beta * KL) - b, and the EMA follows the shaped rewards."""
    policy, ref = policy_pair
    loss = Recorder(monkeypatch, reinforce_loop, "reinforce_loss")
    shaping = Recorder(monkeypatch, reinforce_loop, "kl_penalized_rewards")
    beta = 0.5
    reinforce_loop.train_reinforce(policy, tokenizer, scripted_reward([[1, 3], [5, 7]]), PROMPTS,
                                   smoke_rl(kl_beta=beta), ref_policy=ref, progress=False)
    (shaped0, kl0), (shaped1, kl1) = (out for _, out in shaping.calls)
    assert kl0.abs().max() > 0.01 and kl1.abs().max() > 0.01  # the two models differ
    assert shaped0.tolist() == pytest.approx((torch.tensor([1.0, 3.0]) - beta * kl0).tolist())
    b1 = shaped0.mean()  # first batch: its own mean; and the EMA after it is that mean
    assert loss.calls[0][0][1].tolist() == pytest.approx((shaped0 - b1).tolist(), abs=1e-6)
    assert loss.calls[1][0][1].tolist() == pytest.approx((shaped1.cpu() - b1).tolist(), abs=1e-6)


def test_the_gradient_uses_the_distribution_the_replies_were_sampled_from(tiny_policy, tokenizer, monkeypatch):
    """log pi(y) in the loss is the log-probability under temperature and the nucleus, as sampled:
    re-computed here from the policy's logits with the warper that sampling used."""
    temperature, top_p = 0.7, 0.6
    with torch.no_grad():  # less flat distributions: a nucleus of hundreds of tokens, not of most of the vocabulary
        tiny_policy.lm_head.weight.mul_(12)
    loss = Recorder(monkeypatch, reinforce_loop, "reinforce_loss")
    sampled = Recorder(monkeypatch, rollout, "sample")
    cfg = smoke_rl(iterations=1, temperature=temperature, top_p=top_p, lr=0.0)
    reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[0.0, 1.0]]), PROMPTS, cfg, progress=False)
    roll = sampled.calls[0][1]
    with torch.no_grad():
        logits = rollout.rollout_logits(tiny_policy, roll)
        warped = torch.stack([logprobs_of_warper(logits[:, t], temperature, top_p) for t in range(roll.resp_len)], 1)
        by_hand = (warped.gather(-1, roll.reply_ids[..., None])[..., 0] * roll.resp_mask).sum(-1)
    seq_logp = loss.calls[0][0][0].detach()
    assert seq_logp.tolist() == pytest.approx(by_hand.tolist(), abs=1e-4)
    for other in (logprobs.token_logprobs(logits, roll.reply_ids, top_p),  # temperature left out
                  logprobs.token_logprobs(logits, roll.reply_ids, 1.0, temperature)):  # the nucleus left out
        assert (seq_logp - logprobs.masked_sum(other, roll.resp_mask)).abs().max() > 0.5  # each matters here


def logprobs_of_warper(scores, temperature, top_p):
    """(batch, vocab) next-token logits -> log-probabilities of the distribution NucleusWarper samples."""
    return torch.log_softmax(rollout.NucleusWarper(top_p, temperature)(None, scores), -1)


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


def test_each_iteration_logs_what_it_sampled_and_how_long_each_part_took(tiny_policy, tokenizer, monkeypatch):
    sampled = Recorder(monkeypatch, rollout, "sample")
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3], [5, 9]]), PROMPTS,
                                          smoke_rl(max_new_tokens=3), progress=False)
    rolls = [out for _, out in sampled.calls]
    assert [r.resp_len for r in rolls] == [3, 3]  # max_new_tokens (a random model almost never ends its turn)
    assert hist["response/length"] == pytest.approx([float(r.lengths.float().mean()) for r in rolls])
    assert hist["response/ended_frac"] == pytest.approx([float(r.ended.float().mean()) for r in rolls])
    assert hist["reward/std"] == pytest.approx([2 ** 0.5, 8 ** 0.5])
    assert hist["optim/lr"] == [1e-3, 1e-3] and all(g > 0 for g in hist["optim/grad_norm"])
    assert all(0 < e < np.log(len(tokenizer)) for e in hist["policy/entropy"])
    for i in range(2):
        parts = hist["time/generate"][i] + hist["time/score"][i] + hist["time/backward"][i]
        assert min(hist["time/generate"][i], hist["time/score"][i], hist["time/backward"][i]) >= 0
        assert parts == pytest.approx(hist["time/step"][i], abs=1e-6)


def test_truncated_replies_pay_the_truncation_penalty(tiny_policy, tokenizer, monkeypatch):
    eos_bias = torch.zeros(len(tokenizer))
    eos_bias[tokenizer.eos_token_id] = 9.5  # about one chance in five to end the turn at each token
    tiny_policy.lm_head.register_forward_hook(lambda module, args, out: out + eos_bias)
    sampled = Recorder(monkeypatch, rollout, "sample")
    baseline_in = Recorder(monkeypatch, reinforce_loop, "ema_advantages")
    hist = reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3, 5, 7]]), PROMPTS,
                                          smoke_rl(iterations=1, prompts_per_iter=4, max_new_tokens=2,
                                                   truncation_penalty=0.5), progress=False)
    ended = sampled.calls[0][1].ended.float()
    assert 0 < ended.sum() < 4  # some replies ended their turn, some were cut off
    penalised = torch.tensor([1.0, 3.0, 5.0, 7.0]) - 0.5 * (1 - ended)  # only the cut-off replies pay
    assert baseline_in.calls[0][0][0].tolist() == pytest.approx(penalised.tolist())
    assert hist["reward/mean"] == [pytest.approx(float(penalised.mean()))]


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


def test_the_reinforce_loop_checkpoints_every_checkpoint_every_iterations_and_at_the_end(tiny_policy, tokenizer,
                                                                                         tmp_path, monkeypatch):
    from alignlib import checkpoint

    saved = Recorder(monkeypatch, checkpoint, "save")
    reinforce_loop.train_reinforce(tiny_policy, tokenizer, scripted_reward([[1, 3]] * 4), PROMPTS, smoke_rl(iterations=4),
                                   progress=False, checkpoint_dir=tmp_path, checkpoint_every=3)
    assert [args[1] for args, _ in saved.calls] == [3, 4]


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

    from alignlib import results

    cfg = smoke_rl(iterations=3)

    def run(reward_fn, checkpoint_dir=None):
        from transformers import LlamaForCausalLM

        from conftest import tiny_config

        torch.manual_seed(0)
        policy = LlamaForCausalLM(tiny_config(tokenizer)).eval()
        results.seed_everything(cfg.seed)
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

    from alignlib import checkpoint, results

    def run(iterations, checkpoint_dir=None):
        from transformers import LlamaForCausalLM

        from conftest import tiny_config

        torch.manual_seed(0)
        policy = LlamaForCausalLM(tiny_config(tokenizer)).eval()
        results.seed_everything(0)
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


def test_the_rm_loop_checkpoints_every_checkpoint_every_steps_and_at_the_end(tiny_rm, tokenizer, tmp_path, monkeypatch):
    from alignlib import checkpoint

    saved = Recorder(monkeypatch, checkpoint, "save")
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, batch_size=4, max_steps=None, amp="none")
    reward_model_loop.train_reward_model(tiny_rm(), tokenizer, toy_pairs()[:12], cfg, max_length=128, progress=False,
                                         checkpoint_dir=tmp_path, checkpoint_every=2)
    assert [args[1] for args, _ in saved.calls] == [2, 3]  # 3 steps: the 2nd, then the last


def test_an_interrupted_reward_model_run_resumes_to_the_same_history(tiny_rm, tokenizer, tmp_path, monkeypatch):
    cfg = config.with_overrides(config.get_profile("smoke").rm_scalar, lr=5e-3, batch_size=4, max_steps=None,
                                epochs=2, warmup_steps=2, lora_dropout=0.3, amp="none")

    def run(checkpoint_dir=None):
        model = tiny_rm(seed=1, lora_dropout=0.3)
        hist = reward_model_loop.train_reward_model(model, tokenizer, toy_pairs(), cfg, max_length=128, progress=False,
                                                    checkpoint_dir=checkpoint_dir, checkpoint_every=2)
        return hist, model

    whole, model_whole = run()
    loss_fn, calls = reward_model_loop.reward_model_loss, []

    def dies_at_the_fifth_batch(*args):
        calls.append(1)
        if len(calls) == 5:
            raise Interrupted
        return loss_fn(*args)

    monkeypatch.setattr(reward_model_loop, "reward_model_loss", dies_at_the_fifth_batch)
    with pytest.raises(Interrupted):
        run(tmp_path)  # a checkpoint after 4 steps
    calls.clear()

    def counts_batches(*args):
        calls.append(1)
        return loss_fn(*args)

    monkeypatch.setattr(reward_model_loop, "reward_model_loss", counts_batches)
    resumed, model_resumed = run(tmp_path)
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
