"""What the results say, decided in one place: the verdicts that the report, the README and the notebooks state
("holds", "withdrawn", "within noise", "falls", "met", ...) and the few numbers derived for them.

Pure functions of the dicts that run records and study summaries hold (`results/<profile>/*.json`, the
`seeds.json`, `overoptimization.json` and `rm_ablation.json` summaries, `make bench`'s records); nothing here reads
a file. A verdict is a short string or a bool; the wording around it belongs to whoever shows it.
"""

from __future__ import annotations

import numpy as np

from .config import OVEROPT_POLICIES
AIM = 1.5  # make bench's aim: alignlib at 1.5x TRL's throughput
MATMUL_AIM = 0.6  # and 60% of the matrix-product rate


def interval_above(ci95, x: float) -> bool:
    """The whole interval lies above x (a gain above 0, an accuracy or a win-rate above 0.5)."""
    return ci95[0] > x


def mean(xs) -> float:
    return sum(xs) / len(xs)


def rm_losses(record: dict) -> dict:
    """A reward model's training loss: the mean over its steps, and the mean of its last 20 steps."""
    loss = record["curve"]["train/loss"]
    return {"mean": mean(loss), "end": mean(loss[-20:])}


def findings(rm: dict, policy: dict, comparison: dict) -> dict:
    """The headline verdicts of the scalar reward model and the EMA policy: the RM beats chance (its accuracy's
    interval lies above 0.5), lies "above", "below" or "within noise" of the rule "the longer reply wins" (the
    rule's accuracy on the same pairs against the RM's interval) and leans on length (below half right where the
    chosen reply is the shorter); the
    policy raises the reward (its paired gain's interval lies above 0) and the judge it never saw agrees (its
    win-rate's interval under the probabilistic RM lies above 0.5)."""
    m, p = rm["metrics"], policy["metrics"]
    lo, hi = m["val_accuracy_ci95"]
    rule = m["length_baseline_accuracy"]
    return {"rm_beats_chance": interval_above(m["val_accuracy_ci95"], 0.5),
            "rm_vs_length_rule": "above" if lo > rule else "below" if hi < rule else "within noise",
            "rm_leans_on_length": m["accuracy_when_chosen_shorter"] < 0.5,
            "policy_raises_reward": interval_above(p["reward_delta_ci95"], 0.0),
            "other_judge_agrees": interval_above(comparison["metrics"]["reinforce_ema/prob/win_rate_ci95"], 0.5)}


def sanity_checks(checks: list[dict]) -> dict:
    """The original write-up's checks on a trained RM: the chosen reply outscores the rejected one, and a real
    definition outscores a non-answer."""
    reward = {c["label"]: c["reward"] for c in checks}
    return {"chosen_beats_rejected": reward["training pair: chosen"] > reward["training pair: rejected"],
            "definition_beats_non_answer": reward["real definition"] > reward["non-answer"]}


def wider_than_uniform(var_mean: float, scores: int = 10) -> bool:
    """A probabilistic RM's mean Var[p] exceeds that of a uniform distribution over the scores 1..`scores`."""
    return var_mean > (scores ** 2 - 1) / 12


def one_code(records: list[dict]) -> bool:
    """Every record was made by the same code (one `code_version`)."""
    return len({r["code_version"] for r in records}) == 1


# ------------------------------------------------------------------------------------------------ seeds

def rankings(seeds: dict | None) -> list[dict]:
    """Each ranking of seeds.json (A minus B of one metric over training seeds), with its verdict: "holds" where
    the interval over seeds excludes 0, "withdrawn" where it does not."""
    return [{**r, "verdict": "holds" if r["holds"] else "withdrawn"} for r in (seeds or {}).get("rankings", [])]


def ranking(seeds: dict | None, a: str, b: str, metric: str) -> dict | None:
    """The ranking A minus B of `metric`, or None while `make seeds` has not compared the two."""
    return next((r for r in rankings(seeds) if (r["a"], r["b"], r["metric"]) == (a, b, metric)), None)


def baseline(seeds: dict | None) -> dict | None:
    """EMA against no baseline over seeds: the difference in gain and in E[A^2] (rankings of seeds.json), or None
    while `make seeds` has not compared the two."""
    gain = ranking(seeds, "reinforce_ema", "reinforce_none", "reward_delta_mean")
    sq = ranking(seeds, "reinforce_ema", "reinforce_none", "advantage_sq_mean")
    return None if gain is None or sq is None else {"gain": gain, "sq": sq}


def kl_penalty(seeds: dict | None) -> dict | None:
    """EMA + KL against EMA over seeds: whether the penalty lowers the KL to SFT (a ranking that holds, with a
    negative difference) and whether the gain moves beyond noise."""
    kl = ranking(seeds, "reinforce_ema_kl", "reinforce_ema", "kl_to_sft")
    gain = ranking(seeds, "reinforce_ema_kl", "reinforce_ema", "reward_delta_mean")
    if kl is None or gain is None:
        return None
    return {"kl": kl, "gain": gain, "lowers_kl": kl["holds"] and kl["diff"] < 0, "gain_changes": gain["holds"]}


def sampled_reward(seeds: dict | None) -> dict | None:
    """r ~ p against r = E[p] over seeds, on the gain and on the win-rate: "holds" (both), "holds on one", or
    "does not hold"; `only`: it is the one ranking of the report that holds."""
    gain = ranking(seeds, "reinforce_prob_sampled", "reinforce_prob_expected", "reward_delta_mean")
    win = ranking(seeds, "reinforce_prob_sampled", "reinforce_prob_expected", "win_rate")
    if gain is None or win is None:
        return None
    held = (gain["holds"], win["holds"])
    verdict = "holds" if all(held) else "holds on one" if any(held) else "does not hold"
    others = [r for r in rankings(seeds) if r["holds"] and r["a"] != "reinforce_prob_sampled"]
    return {"gain": gain, "win_rate": win, "verdict": verdict, "only": verdict == "holds" and not others}


def same_machine_cost(ema: list[dict] | None, rloo: list[dict] | None) -> dict | None:
    """EMA's and RLOO's seconds per iteration and peak training memory over their extra seeds, when all of those
    runs were made on one machine (a fairer timing than two single runs); else None."""
    if not ema or not rloo or len({r["hardware"] for r in ema + rloo}) != 1:
        return None
    per = lambda runs, key: [r["metrics"][key] for r in runs]
    return {"hardware": ema[0]["hardware"], "ema": per(ema, "sec_per_iter"), "rloo": per(rloo, "sec_per_iter"),
            "ema_mb": per(ema, "peak_memory_train_mb"), "rloo_mb": per(rloo, "peak_memory_train_mb")}


# ---------------------------------------------------------------------------------- over-optimisation

def judge_peak(points: list[dict]) -> dict:
    """The point where the judge's gain is largest (the first of equal ones)."""
    return max(points, key=lambda p: p["judge_gain_sd"])


def judge_trend(points: list[dict]) -> str:
    """"rising": the judge's gain is largest at the last point; "falls": at the last point it lies below its
    peak beyond noise (the two bootstrap intervals, in reward units, do not overlap); else "within noise"."""
    peak, last = judge_peak(points), points[-1]
    if peak["iteration"] == last["iteration"]:
        return "rising"
    return "falls" if last["judge_gain_ci95"][1] < peak["judge_gain_ci95"][0] else "within noise"


def largest_dip(points: list[dict]) -> dict | None:
    """The largest fall of the judge's gain from the best point so far to a later point: {"from", "to"} (the two
    points), or None where the gain never falls. A dip is not a fall (`judge_trend` decides that)."""
    best, dip = None, None
    for p in points:
        if best is not None and p["judge_gain_sd"] < best["judge_gain_sd"] and (
                dip is None or best["judge_gain_sd"] - p["judge_gain_sd"] > dip["from"]["judge_gain_sd"] - dip["to"]["judge_gain_sd"]):
            dip = {"from": best, "to": p}
        if best is None or p["judge_gain_sd"] > best["judge_gain_sd"]:
            best = p
    return dip


def overoptimization(summary: dict | None) -> dict | None:
    """Per run with more than its starting point: the judge's peak, the last point, the judge's trend, its largest
    dip (`largest_dip`) and whether the proxy's gain at the end exceeds its gain at the judge's peak; the runs whose
    judge falls, the largest KL measured, and the study's runs not made yet."""
    if summary is None:
        return None
    policies = summary["policies"]
    runs = {name: {"peak": judge_peak(run["points"]), "last": run["points"][-1], "trend": judge_trend(run["points"]),
                   "dip": largest_dip(run["points"]),
                   "proxy_rises": run["points"][-1]["proxy_gain_sd"] > judge_peak(run["points"])["proxy_gain_sd"]}
            for name, run in policies.items() if len(run["points"]) > 1}
    return {"runs": runs, "falls": [name for name, run in runs.items() if run["trend"] == "falls"],
            "max_kl": max((p["kl_to_sft"] for name in runs for p in policies[name]["points"]), default=None),
            "missing": [name for name in OVEROPT_POLICIES if name not in policies]}


# ---------------------------------------------------------------------------------------- the judges

def judge_agreement(margins_a, margins_b) -> dict:
    """How far two reward models agree on the same pairs: the correlation of their margins r(chosen) - r(rejected)
    and the share of pairs both rank the same way (a tie of either counts half). Two judges whose margins correlate
    near 1 are one judge twice: a gain that both see is not confirmed by an independent one."""
    a, b = np.asarray(margins_a, float), np.asarray(margins_b, float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"two judges are compared on the same pairs: got {a.shape} and {b.shape} margins")
    same = np.where((a == 0) | (b == 0), 0.5, (np.sign(a) == np.sign(b)).astype(float))
    return {"margin_correlation": float(np.corrcoef(a, b)[0, 1]), "same_ranking": float(same.mean()), "pairs": int(a.size)}


# ------------------------------------------------------------------------------------- ending the turn

def ending_the_turn(policy: dict) -> dict:
    """How much of a policy's gain is ending the turn, from its record: the gain judged at the training cap and how
    much of it comes from prompts where only the policy's reply ended there; the gain with room to end (the
    evaluation's budget) and where both replies ended. "mostly ending": with room to end the gain is less than half
    the gain at the cap, or no longer above 0; "partly ending": above 0 and at least half; "none at the cap": the
    gain at the cap is not above 0 (nothing to explain). Also the SFT replies' mean reward at the cap where they
    ended and where they were cut (from the record's samples; None where there is none of a kind)."""
    m, samples = policy["metrics"], policy.get("samples", [])
    cap, full = m["cap_reward_delta_mean"], m["reward_delta_mean"]
    ended = [s["reward_sft_at_cap"] for s in samples if s["ended_sft_at_cap"]]
    cut = [s["reward_sft_at_cap"] for s in samples if not s["ended_sft_at_cap"]]
    share = m["cap_gain_by_ending"]["rl_only_ended"]["share_of_gain"]
    if not interval_above(m["cap_reward_delta_ci95"], 0.0):
        verdict = "none at the cap"
    elif not interval_above(m["reward_delta_ci95"], 0.0) or full < cap / 2:
        verdict = "mostly ending"
    else:
        verdict = "partly ending"
    return {"cap_gain": cap, "cap_gain_ci95": m["cap_reward_delta_ci95"], "cap_share_only_policy_ended": share,
            "cap_ended_sft": m["cap_ended_frac_sft"], "cap_ended_rl": m["cap_ended_frac_rl"], "gain": full,
            "gain_ci95": m["reward_delta_ci95"], "gain_both_ended": m["reward_delta_both_ended"],
            "gain_both_ended_ci95": m["reward_delta_both_ended_ci95"], "ended_sft": m["ended_frac_sft"],
            "ended_rl": m["ended_frac_rl"], "budget": m["eval_budget"], "cap": m["cap_budget"], "verdict": verdict,
            "sft_reward_ended_at_cap": mean(ended) if ended else None, "sft_reward_cut_at_cap": mean(cut) if cut else None}


def collapses(runs: dict[str, dict]) -> list[dict]:
    """The runs whose held-out gain lies below 0 beyond noise (the interval's upper end under 0): a policy that the
    training made worse than SFT under its own reward model, with what it turned into (KL, ended share, distinct-2,
    the training reward's first and last iterations)."""
    out = []
    for name, r in runs.items():
        m = r["metrics"]
        if m["reward_delta_ci95"][1] < 0:
            out.append({"run": name, "seed": r["seed"], "gain": m["reward_delta_mean"], "gain_ci95": m["reward_delta_ci95"],
                        "kl_to_sft": m["kl_to_sft"], "ended_frac_rl": m["ended_frac_rl"], "distinct2_rl": m["distinct2_rl"],
                        "distinct2_sft": m["distinct2_sft"], "train_reward_first": m["train_reward_first"],
                        "train_reward_last": m["train_reward_last"]})
    return out


# ---------------------------------------------------------------------------------- the RM ablation

def best_variant(ablation: dict | None) -> dict | None:
    """The variant with the highest development accuracy (the first of equal ones), and whether its lead over the
    baseline is "outside noise" (paired interval above 0) or "within noise"; None for a baseline alone."""
    variants = (ablation or {}).get("variants", [])
    if len(variants) < 2:
        return None
    best = max(variants, key=lambda v: v["dev accuracy"])
    lead = None if best["variant"] == "baseline" else (
        "outside noise" if interval_above(best["vs baseline 95% CI"], 0) else "within noise")
    return {"variant": best["variant"], "lead": lead}


# ---------------------------------------------------------------------------------------- make bench

BENCH_ROWS = {  # ratio key of bench.json -> (group, alignlib's run, TRL's run, measure)
    "rm_pairs_per_s_ratio_vs_trl": ("reward_model_training", "alignlib", "trl", "pairs_per_s"),
    "rm_tokens_per_s_ratio_vs_trl": ("reward_model_training", "alignlib", "trl", "tokens_per_s"),
    "rm_peak_rss_ratio_vs_trl": ("reward_model_training", "alignlib", "trl", "peak_rss_mb"),
    "policy_samples_per_s_ratio_vs_trl": ("policy_optimisation", "alignlib_rloo", "trl_rloo", "samples_per_s"),
    "policy_ema_samples_per_s_ratio_vs_trl": ("policy_optimisation", "alignlib_ema", "trl_rloo", "samples_per_s"),
    "policy_peak_rss_ratio_vs_trl": ("policy_optimisation", "alignlib_rloo", "trl_rloo", "peak_rss_mb"),
}


def bench_ratios(bench: dict) -> dict:
    """alignlib / TRL per row of BENCH_ROWS: the ratio of the medians and the lowest and highest ratio the
    repeats allow."""
    out = {}
    for ratio, (group, a, t, key) in BENCH_ROWS.items():
        x, y = bench[group][a][key], bench[group][t][key]
        out[ratio] = {"median": bench[ratio], "lo": x["min"] / y["max"], "hi": x["max"] / y["min"]}
    return out


def speed_aim(ratio: dict) -> str:
    """"met" when the lowest ratio the repeats allow reaches AIM, "met by the median only" when just the median
    does, else "not met"."""
    return "met" if ratio["lo"] >= AIM else "met by the median only" if ratio["median"] >= AIM else "not met"


def bench_verdicts(bench: dict) -> dict:
    """A `make bench` record's ratios and its aims: the policy step and reward-model training (pairs per second)
    against AIM, the reward model's share of the matrix-product rate against MATMUL_AIM, and whether the machine
    computes bf16 natively (its precision reason names no native bf16 flag)."""
    ratios = bench_ratios(bench)
    return {"ratios": ratios, "policy": speed_aim(ratios["policy_samples_per_s_ratio_vs_trl"]),
            "rm": speed_aim(ratios["rm_pairs_per_s_ratio_vs_trl"]),
            "matmul": "met" if bench["rm_matmul_fraction"] >= MATMUL_AIM else "not met",
            "native_bf16": "flags: none" not in bench.get("precision_reason", "")}


def run_order(pairs: dict, a: str, b: str) -> dict:
    """Runs of two settings timed in alternating order (a first in even pairs, b first in odd ones): in how many
    pairs the run placed second was faster, and whether that, not the setting, explains the gap (the second run
    faster in every pair, or in none)."""
    n, xs, ys = pairs["pairs"], pairs[a]["values"], pairs[b]["values"]
    second = sum((ys[i] > xs[i]) if i % 2 == 0 else (xs[i] > ys[i]) for i in range(n))
    return {"second_faster": second, "pairs": n, "order": second in (0, n)}
