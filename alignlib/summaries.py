"""Study summaries: results/<profile>/rm_ablation.json, seeds.json and overoptimization.json, written from the
studies' run records (`alignlib.studies`) for the notebooks, the README and the report, with the verdicts
each one states.

Each summary is re-made from the records whenever a study writes one; it is never edited by hand.
"""

from __future__ import annotations

import json

import numpy as np

from . import config, records, stats, tables
from .config import OVEROPT_POLICIES

RM_ABLATION_DIR = "rm_dev"  # results/<profile>/rm_dev/<variant>.json
SEEDS_DIR = "seeds"  # results/<profile>/seeds/<run>_seed<n>.json
OVEROPT_DIR = "overopt"  # results/<profile>/overopt/{rm_proxy,rm_judge,<policy>}.json
# the notebooks' REINFORCE runs that `make seeds` repeats
SEEDED_RUNS = ("reinforce_ema", "reinforce_rloo", "reinforce_ema_kl", "reinforce_none", "reinforce_prob_expected",
               "reinforce_prob_sampled")
# the rankings the report makes, checked over seeds: (A, B, metrics compared); both are judged by the same RM
SEED_RANKINGS = (("reinforce_ema", "reinforce_none", ("reward_delta_mean", "win_rate", "advantage_sq_mean")),
                 ("reinforce_rloo", "reinforce_ema", ("reward_delta_mean", "win_rate")),
                 ("reinforce_ema_kl", "reinforce_ema", ("reward_delta_mean", "win_rate", "kl_to_sft")),
                 ("reinforce_prob_sampled", "reinforce_prob_expected", ("reward_delta_mean", "win_rate")))
SEED_METRICS = ("reward_delta_mean", "reward_delta_sd_units", "win_rate", "kl_to_sft", "length_rl", "ended_frac_rl",
                "cap_reward_delta_mean", "cap_reward_delta_sd_units", "cap_ended_frac_rl", "ended_frac_sft",
                "reward_delta_both_ended",
                "reward_delta_same_length", "length_share_of_gain", "distinct2_rl", "advantage_sq_mean", "advantage_mean",
                "advantage_var")


def rm_ablation_records(profile_name: str) -> dict:
    """variant -> its record, for the variants that have one."""
    found = {v: records.made_here(f"{RM_ABLATION_DIR}/{v}", profile_name) for v in config.RM_ABLATION}
    return {v: r for v, r in found.items() if r is not None}


CHOICE_RULE = ("the variant with the highest development accuracy among those whose lead over the baseline is "
               "outside the noise (paired 95% interval above 0); the baseline, the cheapest, when none is")


def choose_rm_variant(rows: list[dict]) -> str:
    """The setting the ablation chooses (CHOICE_RULE) from `rm_ablation_table`'s rows."""
    better = [r for r in rows if r["variant"] != "baseline" and r["vs baseline 95% CI"][0] > 0]
    return max(better, key=lambda r: r["dev accuracy"])["variant"] if better else "baseline"


def write_rm_ablation_summary(profile_name: str) -> dict:
    """results/<profile>/rm_ablation.json: `rm_ablation_table`'s rows (what the report and notebook 02 show),
    the variants still missing, the code that made each record, and once every variant has run, the
    variant chosen by CHOICE_RULE ("chosen", else null)."""
    found = rm_ablation_records(profile_name)
    rows = json.loads(tables.rm_ablation_table(found).to_json(orient="records"))
    versions = {v: r.get("code_version") for v, r in found.items()}
    missing = [v for v in config.RM_ABLATION if v not in versions]
    out = {"evaluated_on": "development", "variants": rows, "missing": missing, "code_versions": versions,
           "rule": CHOICE_RULE, "chosen": None if missing or "baseline" not in found else choose_rm_variant(rows)}
    path = records.results_dir(profile_name) / "rm_ablation.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def seeds_summary(profile_name: str, names=SEEDED_RUNS, seeds: tuple[int, ...] | None = None) -> dict:
    """Across-seed statistics of each seeded configuration whose runs all exist (`stats.across_seeds`
    of every metric in SEED_METRICS), the per-seed values, and the code that made each run; written
    to results/<profile>/seeds.json. Configurations with a missing seed are listed under "incomplete".
    "rankings": each comparison of SEED_RANKINGS whose two configurations are complete, A minus B over
    seeds (`stats.seed_difference`: diff, ci95, holds)."""
    seeds = config.get_profile(profile_name).studies.seeds if seeds is None else seeds
    out = {"seeds": list(seeds), "metrics": list(SEED_METRICS), "configs": {}, "incomplete": {}}
    for base in names:
        recs = {s: records.made_here(f"{SEEDS_DIR}/{base}_seed{s}" if s else base, profile_name) for s in seeds}
        missing = [s for s, r in recs.items() if r is None]
        if missing:
            out["incomplete"][base] = {"missing_seeds": missing}
            continue
        per_seed = {m: [recs[s]["metrics"].get(m) for s in seeds] for m in SEED_METRICS}
        out["configs"][base] = {
            "per_seed": per_seed,
            "across_seeds": {m: stats.across_seeds(v) for m, v in per_seed.items() if None not in v},
            "within_run_ci95": {s: recs[s]["metrics"]["reward_delta_ci95"] for s in seeds},
            "code_versions": sorted({str(r.get("code_version")) for r in recs.values()}),
        }
    out["rankings"] = [{"a": a, "b": b, "metric": m, **stats.seed_difference(out["configs"][a]["per_seed"][m],
                                                                           out["configs"][b]["per_seed"][m])}
                       for a, b, metrics in SEED_RANKINGS if a in out["configs"] and b in out["configs"] for m in metrics]
    return out


def write_seeds_summary(profile_name: str) -> None:
    path = records.results_dir(profile_name) / "seeds.json"
    path.write_text(json.dumps(seeds_summary(profile_name), indent=1) + "\n")
    print("wrote", records.portable(path))


def in_sd(comparison: dict) -> list[float] | None:
    """A paired comparison's 95% interval of the gain in standard deviations of the SFT rewards, as its
    reward_delta_sd_units gives the mean (None where that scale is undefined: no gain, or no spread)."""
    mean, sd_units = comparison["reward_delta_mean"], comparison["reward_delta_sd_units"]
    if not sd_units or not mean:
        return None
    return [x * sd_units / mean for x in comparison["reward_delta_ci95"]]


def write_overoptimization_summary(profile_name: str) -> dict:
    """results/<profile>/overoptimization.json: the two RMs' validation accuracy and how far their
    margins agree, and each policy's points (iteration, KL, proxy and judge gain in SFT-reward sds); and
    its figure, fig_overoptimization.png."""
    def read(n):
        return records.made_here(f"{OVEROPT_DIR}/{n}", profile_name)

    rms = {role: read(f"rm_{role}") for role in ("proxy", "judge")}
    out = {"rms": {role: {"val_accuracy": r["metrics"]["val_accuracy"], "val_accuracy_ci95": r["metrics"]["val_accuracy_ci95"],
                          "train_pairs": r["metrics"]["train_pairs"]} for role, r in rms.items() if r},
           "policies": {}}
    if all(rms.values()):
        out["rms"]["margin_correlation"] = float(np.corrcoef(rms["proxy"]["margins"], rms["judge"]["margins"])[0, 1])
    for base in OVEROPT_POLICIES:
        r = read(base)
        if r:
            out["policies"][base] = {"complete": r["metrics"]["complete"], "kl_beta": r["config"]["reinforce"]["kl_beta"],
                                     "points": [{"iteration": p["iteration"], "kl_to_sft": p["kl_to_sft"],
                                                 "proxy_gain_sd": p["proxy"]["reward_delta_sd_units"],
                                                 "judge_gain_sd": p["judge"]["reward_delta_sd_units"],
                                                 "proxy_win_rate": p["proxy"]["win_rate"],
                                                 "judge_win_rate": p["judge"]["win_rate"],
                                                 "judge_gain_ci95": p["judge"]["reward_delta_ci95"],
                                                 "judge_gain_sd_ci95": in_sd(p["judge"]),
                                                 "length_rl": p["length_rl"]} for p in r["points"]]}
    path = records.results_dir(profile_name) / "overoptimization.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    if out["policies"]:
        from . import plots

        plots.overoptimization(out, path.with_name("fig_overoptimization.png"))
    return out
