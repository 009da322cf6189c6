import numpy as np
import pytest

from alignlib import config, evaluate, stats


def test_bootstrap_ci_constant_and_deterministic():
    assert stats.bootstrap_ci([0.7] * 50) == pytest.approx([0.7, 0.7])
    x = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = stats.bootstrap_ci(x, seed=1)
    assert stats.bootstrap_ci(x, seed=1) == [lo, hi]
    # normal approximation: 0.6 +- 1.96 * sqrt(0.24 / 100) = [0.504, 0.696]
    assert lo == pytest.approx(0.504, abs=0.02) and hi == pytest.approx(0.696, abs=0.02)


def test_bootstrap_ci_needs_values():
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])


def test_length_analysis_by_hand():
    len_c, len_r = [10, 5, 8, 3], [4, 9, 8, 7]
    r_c, r_r = [1.0, 2.0, 0.0, -1.0], [0.0, 1.0, 1.0, 0.0]
    out = stats.length_analysis(len_c, len_r, r_c, r_r)
    # pairs with different lengths: 0 (RM prefers the longer), 1 (prefers the shorter), 3 (prefers the longer)
    assert out["rm_prefers_longer"] == pytest.approx(2 / 3)
    assert out["length_baseline_accuracy"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert out["accuracy_when_chosen_shorter"] == pytest.approx(0.5) and out["n_chosen_shorter"] == 2


def test_distinct_and_repetition_by_hand():
    replies = [[1, 2, 3, 1, 2], [1, 2]]
    # bigrams: (1,2) (2,3) (3,1) (1,2) | (1,2) -> 3 unique of 5
    assert stats.distinct_n(replies, 2) == pytest.approx(3 / 5)
    # 2-grams within reply 0: 4, one repeat -> 0.25; reply 1: 1 gram, no repeat -> 0
    assert stats.repetition_rate(replies, n=2) == pytest.approx((0.25 + 0.0) / 2)


def test_compare_policies_by_hand():
    gen = {"tokens": [[1, 2, 3], [4, 5]], "ended": [True, False]}
    out = evaluate.compare_policies([0.0, 1.0], [1.0, 1.0], gen, gen)
    assert out["reward_delta_mean"] == pytest.approx(0.5)
    assert out["win_rate"] == pytest.approx((1 + 0.5) / 2)  # one win, one tie
    assert out["length_rl"] == 2.5 and out["ended_frac_sft"] == 0.5 and out["n_eval_prompts"] == 2
    assert out["gain_by_ending"]["both_ended"] == {"n": 1, "reward_delta_mean": 1.0, "reward_delta_ci95": None,
                                                   "share_of_gain": 1.0}
    assert out["reward_delta_both_ended"] == 1.0 and out["reward_delta_both_ended_ci95"] is None
    assert out["reward_per_token"] is None  # the same lengths: nothing to fit
    longer = {"tokens": [[1, 2, 3, 4], [4, 5]], "ended": [True, False]}  # the first reply 1 token longer, +1 reward
    assert evaluate.compare_policies([0.0, 1.0], [1.0, 1.0], gen, longer)["reward_per_token"] == pytest.approx(1.0)


def test_distribution_report_by_hand():
    big = 30.0
    lc = np.full((2, 10), -big); lc[0, 7] = big; lc[1, 2] = big  # certain: 8 and 3
    lr = np.full((2, 10), -big); lr[0, 4] = big; lr[1, 4] = big  # certain: 5 and 5
    out = stats.distribution_report(lc, lr)
    assert out["expected_score_mean"] == pytest.approx((8 + 3 + 5 + 5) / 4)
    assert out["var_mean"] == pytest.approx(0.0, abs=1e-6)
    assert out["classes_used_as_argmax"] == 3 and out["top_class_share"] == pytest.approx(0.5)
    assert out["var_when_right"] == pytest.approx(0.0, abs=1e-6) and out["var_when_wrong"] == pytest.approx(0.0, abs=1e-6)


def test_paired_reward_comparison_by_hand():
    out = stats.paired_reward_comparison([1.0, 2.0, 3.0, 2.0], [2.0, 2.0, 1.0, 4.0])
    # differences +1, 0, -2, +2: mean 0.25; wins 1, 0.5 (tie), 0, 1 -> 0.625
    assert out["reward_delta_mean"] == pytest.approx(0.25)
    assert out["win_rate"] == pytest.approx(0.625)
    # SFT rewards 1, 2, 3, 2: population std sqrt(0.5)
    assert out["reward_delta_sd_units"] == pytest.approx(0.25 / np.sqrt(0.5))
    assert out["reward_sft_mean"] == pytest.approx(2.0) and out["reward_rl_mean"] == pytest.approx(2.25)
    lo, hi = out["reward_delta_ci95"]
    assert lo < 0.25 < hi
    assert stats.paired_reward_comparison([1.0, 1.0], [1.0, 2.0])["reward_delta_sd_units"] is None
    with pytest.raises(ValueError, match="paired rewards"):
        stats.paired_reward_comparison([1.0, 2.0], [1.0])


def test_length_controlled_gain_by_hand():
    # gains exactly 0.5 + 0.1 * (length change): the fit recovers both, and length explains the rest
    dlen = np.array([0.0, 10.0, -5.0, 20.0])
    gain = 0.5 + 0.1 * dlen
    out = stats.length_controlled_gain(np.zeros(4), gain, np.full(4, 50.0), 50.0 + dlen)
    assert out["reward_per_token"] == pytest.approx(0.1) and out["reward_delta_same_length"] == pytest.approx(0.5)
    assert out["reward_delta_same_length_ci95"] == pytest.approx([0.5, 0.5])
    assert out["length_share_of_gain"] == pytest.approx(0.1 * 6.25 / (0.5 + 0.625))
    same = stats.length_controlled_gain([0.0, 0.0], [1.0, 2.0], [5, 7], [5, 7])  # no length change: no fit
    assert same["reward_per_token"] is None and same["reward_delta_same_length_ci95"] is None


def test_gain_by_ending_by_hand():
    out = stats.gain_by_ending([0, 0, 0, 0, 0], [1.0, 2.0, -1.0, 3.0, 0.5],
                               [True, True, False, False, True], [True, True, True, False, False])
    # gains 1, 2 | -1 | 3 | 0.5: total 5.5, so the groups hold 3/5.5, -1/5.5, 3/5.5 and 0.5/5.5 of it
    assert {k: (v["n"], v["reward_delta_mean"]) for k, v in out.items()} == {
        "both_ended": (2, 1.5), "rl_only_ended": (1, -1.0), "neither_ended": (1, 3.0), "sft_only_ended": (1, 0.5)}
    assert out["both_ended"]["share_of_gain"] == pytest.approx(3 / 5.5)
    assert out["rl_only_ended"]["share_of_gain"] == pytest.approx(-1 / 5.5)
    assert sum(v["share_of_gain"] for v in out.values()) == pytest.approx(1.0)
    assert out["both_ended"]["reward_delta_ci95"] == pytest.approx([1.0, 2.0])  # resamples of {1, 2}
    assert out["rl_only_ended"]["reward_delta_ci95"] is None  # one prompt: no interval
    assert stats.gain_by_ending([0.0], [1.0], [True], [True])["neither_ended"] == {
        "n": 0, "reward_delta_mean": None, "reward_delta_ci95": None, "share_of_gain": None}
    assert stats.gain_by_ending([1.0, 0.0], [0.0, 1.0], [True, True], [True, True])["both_ended"]["share_of_gain"] is None


def test_cut_replies_are_the_replies_a_smaller_budget_samples(tiny_policy, tokenizer):
    """The evaluation samples once with room to end; its replies cut to the training cap are exactly what sampling
    with the cap gives (the Gumbel noise depends on seed, row and step only), ended flags and texts included."""
    prompts = [[{"role": "user", "content": w}] for w in ("cats", "dogs", "rain", "snow", "tea")]
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, eval_batch_size=3, max_new_tokens=4,
                                eval_max_new_tokens=24, amp="none")
    assert cfg.eval_budget == 24 and config.with_overrides(cfg, eval_max_new_tokens=None).eval_budget == 4
    tiny_policy.generation_config.eos_token_id = None
    long = evaluate.generate_for_eval(tiny_policy, tokenizer, prompts, cfg, progress=False)
    short = evaluate.generate_for_eval(tiny_policy, tokenizer, prompts, cfg, progress=False, max_new_tokens=4)
    assert long["budget"] == 24 and short["budget"] == 4
    assert max(len(t) for t in long["tokens"]) > 4  # the long budget was used
    cut = evaluate.cut_replies(long, 4, tokenizer)
    assert cut == short
    with pytest.raises(ValueError, match="cannot show a budget of 30"):
        evaluate.cut_replies(long, 30, tokenizer)


def test_cut_replies_by_hand(tokenizer):
    eos = tokenizer.eos_token_id
    gen = {"texts": ["", "", ""], "tokens": [[5, 6, eos], [5, 6, 7, 8, eos], [5, 6, 7, 8, 9]],
           "ended": [True, True, False], "budget": 5}
    cut = evaluate.cut_replies(gen, 3, tokenizer)
    assert cut["tokens"] == [[5, 6, eos], [5, 6, 7], [5, 6, 7]] and cut["ended"] == [True, False, False]
    assert cut["budget"] == 3 and cut["texts"][1] == tokenizer.decode([5, 6, 7], skip_special_tokens=True).strip()


def test_compare_at_cap_prefixes_every_key():
    cut = {"ended": [True, False], "budget": 2}
    out = evaluate.compare_at_cap([0.0, 1.0], [1.0, 1.0], cut, {"ended": [True, True], "budget": 2})
    assert out["cap_reward_delta_mean"] == pytest.approx(0.5) and out["cap_budget"] == 2
    assert out["cap_ended_frac_sft"] == 0.5 and out["cap_ended_frac_rl"] == 1.0
    assert out["cap_gain_by_ending"]["rl_only_ended"]["n"] == 1
    assert all(k.startswith("cap_") for k in out)


def test_across_seeds_by_hand():
    out = stats.across_seeds([0.2, 0.4, 0.3])
    # mean 0.3, sd sqrt(((-0.1)^2 + 0.1^2 + 0) / 2) = 0.1, half-width 4.303 * 0.1 / sqrt(3)
    assert out["mean"] == pytest.approx(0.3) and out["sd"] == pytest.approx(0.1)
    assert out["ci95"] == pytest.approx([0.3 - 0.248434, 0.3 + 0.248434], abs=1e-6)
    assert (out["n"], out["min"], out["max"]) == (3, 0.2, 0.4)
    assert stats.across_seeds([1.0, 1.0])["ci95"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="one per seed"):
        stats.across_seeds([0.5])


def test_seed_difference_by_hand():
    # a = (1, 2, 3): mean 2, var 1; b = (0, 0.5, 1): mean 0.5, var 0.25; pooled (2*1 + 2*0.25) / 4 = 0.625
    # half-width t_{0.975, 4} sqrt(0.625 (1/3 + 1/3)) = 2.776 * 0.645497 = 1.791899
    out = stats.seed_difference([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    assert out["diff"] == pytest.approx(1.5)
    assert out["ci95"] == pytest.approx([1.5 - 1.791899, 1.5 + 1.791899], abs=1e-5)
    assert out["holds"] is False  # the interval reaches below 0: the seeds do not rank them
    far = stats.seed_difference([10.0, 11.0, 12.0], [0.0, 0.5, 1.0])
    assert far["holds"] is True and stats.seed_difference([0.0, 0.5, 1.0], [10.0, 11.0, 12.0])["holds"] is True
    with pytest.raises(ValueError, match="one per seed"):
        stats.seed_difference([1.0], [1.0, 2.0])


def test_paired_accuracy_difference_by_hand():
    # A right on pairs 0, 1, 2; B right on 0 and 3; a zero margin is not right
    out = stats.paired_accuracy_difference([1.0, 0.5, 2.0, -1.0, 0.0], [3.0, -1.0, -0.5, 0.2, 0.0])
    assert (out["accuracy_a"], out["accuracy_b"]) == (pytest.approx(0.6), pytest.approx(0.4))
    assert out["accuracy_diff"] == pytest.approx(0.2)
    lo, hi = out["accuracy_diff_ci95"]
    assert -1 <= lo < 0.2 < hi <= 1
    # the same model twice: no difference, and an interval of zero width (agreements cancel)
    same = stats.paired_accuracy_difference([1.0, -1.0, 2.0], [1.0, -1.0, 2.0])
    assert same["accuracy_diff"] == 0.0 and same["accuracy_diff_ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same pairs"):
        stats.paired_accuracy_difference([1.0, 2.0], [1.0])


def test_cross_judge_scores_every_run_with_every_judge():
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    sft = ["xx", "yyyy"]
    runs = {"long": {"samples": [{"prompt": "a", "sft": sft[0], "rl": "xxxx"}, {"prompt": "b", "sft": sft[1], "rl": "yyyyyy"}]},
            "short": {"samples": [{"prompt": "a", "sft": sft[0], "rl": "x"}, {"prompt": "b", "sft": sft[1], "rl": "y"}]}}
    calls = []

    def length_judge(ps, texts):
        calls.append(tuple(texts))
        return np.array([float(len(t)) for t in texts])

    out = evaluate.cross_judge(runs, {"length": length_judge, "brevity": lambda ps, t: -length_judge(ps, t)}, prompts)
    assert out["long"]["length"]["reward_delta_mean"] == pytest.approx(2.0)  # +2, +2
    assert out["long"]["brevity"]["win_rate"] == pytest.approx(0.0)
    assert out["short"]["length"]["reward_delta_mean"] == pytest.approx((-1 - 3) / 2)
    assert out["short"]["brevity"]["win_rate"] == pytest.approx(1.0)
    # the shared SFT replies are scored once per judge: 2 judges x (1 SFT + 2 runs) = 6 calls
    assert len(calls) == 6 and calls.count(tuple(sft)) == 2


def test_cross_judge_refuses_samples_of_other_prompts():
    prompts = [[{"role": "user", "content": "a"}]]
    runs = {"r": {"samples": [{"prompt": "not a", "sft": "x", "rl": "y"}]}}
    with pytest.raises(ValueError, match="other prompts"):
        evaluate.cross_judge(runs, {"j": lambda ps, t: np.zeros(len(t))}, prompts)


class Bars:
    """Stands in for tqdm in `evaluate`: keeps each bar's arguments and updates."""

    def __init__(self):
        self.made = []

    def __call__(self, **kwargs):
        bar = type("Bar", (), {"update": lambda s, n: s.updates.append(n), "close": lambda s: None})()
        bar.kwargs, bar.updates = kwargs, []
        self.made.append(bar)
        return bar


def test_generation_and_the_kl_pass_show_one_bar_counting_the_prompts(tiny_policy, tokenizer, monkeypatch):

    bars = Bars()
    monkeypatch.setattr(evaluate, "tqdm", bars)
    prompts = [[{"role": "user", "content": w}] for w in ("cats", "dogs", "rain")]
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, eval_batch_size=2, max_new_tokens=2, amp="none")
    gen = evaluate.generate_for_eval(tiny_policy, tokenizer, prompts, cfg)
    evaluate.kl_to_reference(tiny_policy, tiny_policy, tokenizer, prompts, gen["tokens"], cfg)
    evaluate.generate_for_eval(tiny_policy, tokenizer, prompts, cfg, progress=False)
    assert [b.kwargs["desc"] for b in bars.made] == ["generating replies (up to 2 tokens)", "KL to reference",
                                                     "generating replies (up to 2 tokens)"]
    assert all(b.kwargs["total"] == 3 and b.updates == [2, 1] for b in bars.made)  # batches of 2, then 1
    assert [b.kwargs["disable"] for b in bars.made] == [False, False, True]


def test_the_kl_pass_takes_fewer_rows_when_replies_are_long(tiny_policy, tokenizer, monkeypatch):
    """Two models' logits over the vocabulary for 32 replies of 1024 tokens would take 13 GB: the pass keeps
    rows x longest reply within KL_TOKENS_PER_PASS, and the mean is the same."""
    prompts = [[{"role": "user", "content": w}] for w in ("cats", "dogs", "rain")]
    replies = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
    cfg = config.with_overrides(config.get_profile("smoke").reinforce, eval_batch_size=3, amp="none")
    whole = evaluate.kl_to_reference(tiny_policy, tiny_policy, tokenizer, prompts, replies, cfg, progress=False)
    rows = []
    real = evaluate.rollout.from_replies
    monkeypatch.setattr(evaluate.rollout, "from_replies", lambda tok, p, r: rows.append(len(p)) or real(tok, p, r))
    monkeypatch.setattr(evaluate, "KL_TOKENS_PER_PASS", 8)  # 8 tokens // 4 (the longest reply) = 2 rows per pass
    assert evaluate.kl_to_reference(tiny_policy, tiny_policy, tokenizer, prompts, replies, cfg,
                                    progress=False) == pytest.approx(whole, abs=1e-6)
    assert rows == [2, 1]


def test_ended_within_and_the_cap_that_lets_a_share_of_the_replies_end():
    # five replies: ended at 20, 90 and 300 tokens; two still going at the budget of 512
    lengths, ended = [20, 90, 300, 512, 512], [True, True, True, False, False]
    assert stats.ended_within(lengths, ended, [96, 256, 512]) == {96: 0.4, 256: 0.4, 512: 0.6}
    assert stats.cap_for_share(lengths, ended, 0.6) == 300  # 3 of 5 end within 300 tokens
    assert stats.cap_for_share(lengths, ended, 0.4) == 90
    assert stats.cap_for_share(lengths, ended, 0.9) is None  # only 3 of 5 ever ended
    assert stats.cap_for_share([5, 7], [True, True], 0.9) == 7
