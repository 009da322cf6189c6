"""The verdicts the report, the README and the notebooks state, decided on hand-made summaries (alignlib/verdicts.py)."""

import numpy as np
import pytest

from alignlib import verdicts


def point(iteration, judge, ci, kl=1.0, proxy=0.0):
    return {"iteration": iteration, "judge_gain_sd": judge, "judge_gain_ci95": ci, "kl_to_sft": kl,
            "proxy_gain_sd": proxy}


def test_an_interval_is_above_a_value_only_when_all_of_it_is():
    assert verdicts.interval_above([0.51, 0.6], 0.5)
    assert not verdicts.interval_above([0.5, 0.6], 0.5)  # touching is not above
    assert not verdicts.interval_above([-0.1, 0.3], 0.0)


def test_findings_follow_the_intervals_and_the_length_check():
    rm = {"metrics": {"val_accuracy_ci95": [0.56, 0.66], "accuracy_when_chosen_shorter": 0.45,
                      "length_baseline_accuracy": 0.58}}
    policy = {"metrics": {"reward_delta_ci95": [-0.01, 0.3]}}
    comparison = {"metrics": {"reinforce_ema/prob/win_rate_ci95": [0.55, 0.7]}}
    assert verdicts.findings(rm, policy, comparison) == {
        "rm_beats_chance": True, "rm_vs_length_rule": "within noise", "rm_leans_on_length": True,
        "policy_raises_reward": False, "other_judge_agrees": True}
    rm["metrics"]["length_baseline_accuracy"] = 0.55
    assert verdicts.findings(rm, policy, comparison)["rm_vs_length_rule"] == "above"
    rm["metrics"]["length_baseline_accuracy"] = 0.7
    assert verdicts.findings(rm, policy, comparison)["rm_vs_length_rule"] == "below"


def test_a_ranking_holds_or_is_withdrawn_and_is_none_before_make_seeds():
    seeds = {"rankings": [{"a": "x", "b": "y", "metric": "m", "diff": 0.2, "ci95": [0.1, 0.3], "holds": True},
                          {"a": "x", "b": "y", "metric": "n", "diff": 0.1, "ci95": [-0.1, 0.3], "holds": False}]}
    assert [r["verdict"] for r in verdicts.rankings(seeds)] == ["holds", "withdrawn"]
    assert verdicts.ranking(seeds, "x", "y", "n")["ci95"] == [-0.1, 0.3]
    assert verdicts.ranking(seeds, "y", "x", "m") is None  # A minus B is not B minus A
    assert verdicts.ranking(None, "x", "y", "m") is None and verdicts.rankings(None) == []


def ranking(a, b, metric, diff, holds):
    return {"a": a, "b": b, "metric": metric, "diff": diff, "ci95": [diff - 1, diff + 1], "holds": holds}


def test_the_baseline_verdict_pairs_the_gain_and_the_second_moment_of_ema_against_none():
    seeds = {"rankings": [ranking("reinforce_ema", "reinforce_none", "reward_delta_mean", 0.1, False),
                          ranking("reinforce_ema", "reinforce_none", "advantage_sq_mean", -20.0, True)]}
    said = verdicts.baseline(seeds)
    assert said["gain"]["diff"] == 0.1 and said["sq"]["holds"]
    assert verdicts.baseline({"rankings": seeds["rankings"][:1]}) is None


def test_the_kl_penalty_lowers_the_kl_only_where_a_negative_difference_holds():
    def said(kl_diff, kl_holds, gain_holds):
        seeds = {"rankings": [ranking("reinforce_ema_kl", "reinforce_ema", "kl_to_sft", kl_diff, kl_holds),
                              ranking("reinforce_ema_kl", "reinforce_ema", "reward_delta_mean", 0.1, gain_holds)]}
        out = verdicts.kl_penalty(seeds)
        return out["lowers_kl"], out["gain_changes"]

    assert said(-2.0, True, False) == (True, False)
    assert said(2.0, True, True) == (False, True)  # a penalty that raised the KL does not "lower" it
    assert said(-2.0, False, False) == (False, False)
    assert verdicts.kl_penalty({"rankings": []}) is None


@pytest.mark.parametrize("gain, win, others, verdict, only", [
    (True, True, False, "holds", True), (True, True, True, "holds", False), (True, False, False, "holds on one", False),
    (False, False, False, "does not hold", False)])
def test_the_sampled_reward_ranking_over_gain_and_win_rate(gain, win, others, verdict, only):
    seeds = {"rankings": [ranking("reinforce_prob_sampled", "reinforce_prob_expected", "reward_delta_mean", -0.3, gain),
                          ranking("reinforce_prob_sampled", "reinforce_prob_expected", "win_rate", -0.2, win),
                          ranking("reinforce_rloo", "reinforce_ema", "win_rate", 0.1, others)]}
    out = verdicts.sampled_reward(seeds)
    assert (out["verdict"], out["only"]) == (verdict, only)


def test_the_judge_falls_only_where_its_intervals_at_peak_and_end_do_not_overlap():
    rising = [point(0, 0.0, [0, 0]), point(10, 0.5, [0.1, 0.3]), point(20, 0.8, [0.2, 0.4])]
    assert verdicts.judge_trend(rising) == "rising"
    lower_within_noise = [point(0, 0.0, [0, 0]), point(10, 0.8, [0.2, 0.4]), point(20, 0.5, [0.1, 0.3])]
    assert verdicts.judge_trend(lower_within_noise) == "within noise"  # one lower point is not a fall
    falls = [point(0, 0.0, [0, 0]), point(10, 0.8, [0.3, 0.5]), point(20, 0.2, [0.0, 0.25])]
    assert verdicts.judge_trend(falls) == "falls"
    tie = [point(0, 0.0, [0, 0]), point(10, 0.8, [0.3, 0.5]), point(20, 0.8, [0.3, 0.5])]
    assert verdicts.judge_peak(tie)["iteration"] == 10 and verdicts.judge_trend(tie) == "within noise"


def test_overoptimisation_summary_verdicts():
    free = {"points": [point(0, 0.0, [0, 0], kl=0.0, proxy=0.0), point(10, 0.8, [0.3, 0.5], kl=5.0, proxy=1.0),
                       point(20, 0.2, [0.0, 0.25], kl=9.0, proxy=1.5)], "complete": True}
    summary = {"policies": {"reinforce_ema": free}}
    said = verdicts.overoptimization(summary)
    assert said["falls"] == ["reinforce_ema"] and said["max_kl"] == 9.0
    assert said["runs"]["reinforce_ema"]["proxy_rises"] and said["runs"]["reinforce_ema"]["peak"]["iteration"] == 10
    assert said["missing"] == ["reinforce_ema_kl"] and said["runs"]["reinforce_ema"]["dip"]["to"]["iteration"] == 20
    assert verdicts.overoptimization({"policies": {"reinforce_ema": {"points": [free["points"][0]]}}})["runs"] == {}
    assert verdicts.overoptimization(None) is None


def test_the_largest_dip_is_from_the_best_point_so_far_to_a_later_one():
    pts = [point(0, 0.0, [0, 0]), point(20, 1.43, [0.1, 0.3]), point(40, 1.30, [0.1, 0.3]), point(60, 1.50, [0.1, 0.3]),
           point(80, 1.25, [0.1, 0.3]), point(100, 1.6, [0.1, 0.3])]
    dip = verdicts.largest_dip(pts)  # 1.50 -> 1.25 is larger than 1.43 -> 1.30
    assert (dip["from"]["iteration"], dip["to"]["iteration"]) == (60, 80)
    assert verdicts.largest_dip(pts[:2]) is None  # never falls


def test_two_judges_agreement_by_hand():
    said = verdicts.judge_agreement([1.0, 2.0, -1.0, 0.5], [2.0, 3.0, 1.0, 0.0])
    # same sign on pairs 1 and 2, opposite on 3, a tie on 4 (half): (1 + 1 + 0 + 0.5) / 4
    assert said["same_ranking"] == pytest.approx(0.625) and said["pairs"] == 4
    assert said["margin_correlation"] == pytest.approx(np.corrcoef([1, 2, -1, 0.5], [2, 3, 1, 0])[0, 1])
    assert verdicts.judge_agreement([1, 2, 3], [2, 4, 6])["margin_correlation"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same pairs"):
        verdicts.judge_agreement([1.0, 2.0], [1.0])


def policy(cap, cap_ci, gain, ci, share=0.6):
    return {"seed": 1, "metrics": {
        "cap_reward_delta_mean": cap, "cap_reward_delta_ci95": cap_ci, "reward_delta_mean": gain, "reward_delta_ci95": ci,
        "cap_gain_by_ending": {"rl_only_ended": {"share_of_gain": share}}, "cap_ended_frac_sft": 0.44,
        "cap_ended_frac_rl": 0.7, "reward_delta_both_ended": 0.05, "reward_delta_both_ended_ci95": [-0.1, 0.2],
        "ended_frac_sft": 0.88, "eval_budget": 1024, "cap_budget": 96, "kl_to_sft": 18.9,
        "ended_frac_rl": 0.086, "distinct2_rl": 0.51, "distinct2_sft": 0.8, "train_reward_first": 6.93,
        "train_reward_last": 6.13}}


@pytest.mark.parametrize("cap, cap_ci, gain, ci, verdict", [
    (0.3, [0.2, 0.4], 0.05, [-0.05, 0.15], "mostly ending"),  # with room to end, no gain beyond noise
    (0.3, [0.2, 0.4], 0.12, [0.05, 0.2], "mostly ending"),  # above 0, but less than half
    (0.3, [0.2, 0.4], 0.2, [0.1, 0.3], "partly ending"),
    (0.05, [-0.1, 0.2], 0.2, [0.1, 0.3], "none at the cap")])
def test_how_much_of_the_gain_is_ending_the_turn(cap, cap_ci, gain, ci, verdict):
    record = policy(cap, cap_ci, gain, ci) | {"samples": [
        {"reward_sft_at_cap": 1.0, "ended_sft_at_cap": True}, {"reward_sft_at_cap": 0.5, "ended_sft_at_cap": True},
        {"reward_sft_at_cap": -0.5, "ended_sft_at_cap": False}]}
    said = verdicts.ending_the_turn(record)
    assert said["verdict"] == verdict and said["cap_share_only_policy_ended"] == 0.6 and said["budget"] == 1024
    assert said["sft_reward_ended_at_cap"] == 0.75 and said["sft_reward_cut_at_cap"] == -0.5


def test_a_collapse_is_a_gain_below_zero_beyond_noise():
    runs = {"a": policy(0.3, [0.2, 0.4], -0.178, [-0.267, -0.089]), "b": policy(0.3, [0.2, 0.4], -0.05, [-0.1, 0.02])}
    said = verdicts.collapses(runs)
    assert [c["run"] for c in said] == ["a"] and said[0]["kl_to_sft"] == 18.9 and said[0]["train_reward_last"] == 6.13


def test_the_best_ablation_variant_and_whether_its_lead_is_noise():
    base = {"variant": "baseline", "dev accuracy": 0.60, "vs baseline 95% CI": None}
    wide = {"variant": "all_linear", "dev accuracy": 0.62, "vs baseline 95% CI": [-0.02, 0.05]}
    clear = {"variant": "more_pairs", "dev accuracy": 0.63, "vs baseline 95% CI": [0.01, 0.05]}
    assert verdicts.best_variant({"variants": [base, wide]}) == {"variant": "all_linear", "lead": "within noise"}
    assert verdicts.best_variant({"variants": [base, wide, clear]}) == {"variant": "more_pairs", "lead": "outside noise"}
    assert verdicts.best_variant({"variants": [{**base, "dev accuracy": 0.7}, wide]}) == {"variant": "baseline",
                                                                                         "lead": None}
    assert verdicts.best_variant({"variants": [base]}) is None


def bench(policy_ratio, policy_runs, fraction=0.5, reason="flags: none"):
    """A make bench record: every ratio 1.0 from identical runs, but the RLOO policy step's."""
    same = {"min": 1.0, "max": 1.0}
    runs = {key: same for key in ("pairs_per_s", "tokens_per_s", "peak_rss_mb", "samples_per_s")}
    return {**{ratio: 1.0 for ratio in verdicts.BENCH_ROWS}, "policy_samples_per_s_ratio_vs_trl": policy_ratio,
            "reward_model_training": {"alignlib": runs, "trl": runs},
            "policy_optimisation": {"alignlib_rloo": {**runs, "samples_per_s": policy_runs}, "trl_rloo": runs,
                                    "alignlib_ema": runs},
            "rm_matmul_fraction": fraction, "precision_reason": reason}


def test_bench_aims_are_met_by_the_lowest_ratio_the_repeats_allow():
    met = verdicts.bench_verdicts(bench(1.8, {"min": 1.6, "max": 2.0}, fraction=0.6))
    assert met["policy"] == "met" and met["rm"] == "not met" and met["matmul"] == "met"
    assert met["ratios"]["policy_samples_per_s_ratio_vs_trl"] == {"median": 1.8, "lo": 1.6, "hi": 2.0}
    median_only = verdicts.bench_verdicts(bench(1.55, {"min": 1.2, "max": 1.9}, reason="flags: avx512_bf16"))
    assert median_only["policy"] == "met by the median only" and median_only["native_bf16"]
    assert not met["native_bf16"]


def test_the_run_order_explains_a_gap_when_the_second_run_always_wins():
    pairs = {"pairs": 3, "a": {"values": [100, 130, 100]}, "b": {"values": [120, 110, 125]}}
    assert verdicts.run_order(pairs, "a", "b") == {"second_faster": 3, "pairs": 3, "order": True}
    steady = {"pairs": 2, "a": {"values": [100, 100]}, "b": {"values": [120, 120]}}  # b faster whatever the order
    assert verdicts.run_order(steady, "a", "b")["order"] is False


def test_small_helpers():
    assert verdicts.rm_losses({"curve": {"train/loss": [1.0] * 10 + [0.5] * 20}}) == {"mean": pytest.approx(2 / 3),
                                                                                       "end": 0.5}
    checks = [{"label": "training pair: chosen", "reward": 1.0}, {"label": "training pair: rejected", "reward": 2.0},
              {"label": "real definition", "reward": 0.5}, {"label": "non-answer", "reward": 0.1}]
    assert verdicts.sanity_checks(checks) == {"chosen_beats_rejected": False, "definition_beats_non_answer": True}
    assert verdicts.wider_than_uniform(8.3) and not verdicts.wider_than_uniform(8.25)
    assert verdicts.one_code([{"code_version": "a"}, {"code_version": "a"}])
    assert not verdicts.one_code([{"code_version": "a"}, {"code_version": "b"}])
    ema = [{"hardware": "cpu A", "metrics": {"sec_per_iter": 10.0, "peak_memory_train_mb": 100.0}}]
    rloo = [{"hardware": "cpu A", "metrics": {"sec_per_iter": 11.0, "peak_memory_train_mb": 110.0}}]
    assert verdicts.same_machine_cost(ema, rloo) == {"hardware": "cpu A", "ema": [10.0], "rloo": [11.0],
                                                     "ema_mb": [100.0], "rloo_mb": [110.0]}
    assert verdicts.same_machine_cost(ema, [{**rloo[0], "hardware": "cpu B"}]) is None
    assert verdicts.same_machine_cost(None, rloo) is None
