"""Build report/report.pdf from the run records of one profile (Typst, through the `typst` package).

    ALIGNLIB_PROFILE=cpu python -m report.build

report.typ reads the numbers from results/<profile>/*.json and formats them. What they say (the verdicts of
`alignlib.verdicts`) and which optional parts exist (the studies' summaries, the original settings' run, the SFT
reply lengths, the ledger of `make rerun`) are decided here and handed to it as one JSON, `sys.inputs.values`. A
missing record stops the build, naming the notebook or command that writes it; the published (`cpu`) report also
needs the original settings' run and the SFT reply lengths (PUBLISHED_EXTRA), so that it never says "not run yet".
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from alignlib import verdicts
from alignlib.records import WRITTEN_BY, adapter_digest
from report import ROOT, load, rerun

# record -> the notebook that writes it, in the notebooks' order; rm_scalar_original_lr (notebook 02's run at the
# original learning rate) is read by no later notebook, and not made at the full profile (it is rm_scalar there)
NEEDED = {name: f"notebooks/{notebook}.ipynb" for name, notebook in sorted(
    {**WRITTEN_BY, "rm_scalar_original_lr": "02_scalar_reward_model"}.items(), key=lambda item: item[1])}
STUDIES = ("rm_ablation", "seeds", "overoptimization")  # each adds its section once its summary exists
# the records the published (cpu) report needs beyond the notebooks' -> the command that makes each: the original
# REINFORCE settings (the full profile's EMA run) and the SFT replies' lengths (`make rerun` makes both)
PUBLISHED_EXTRA = {"results/full/reinforce_ema.json": "python -m alignlib reinforce --profile full (make rerun)",
                   "results/full/rm_scalar.json": "python -m alignlib rm --profile full --publish",
                   "results/cpu/sft_reply_lengths.json": "python -m alignlib sft-lengths --profile cpu (make rerun)"}


def needed(profile: str) -> list[str]:
    return [n for n in NEEDED if not (profile == "full" and n == "rm_scalar_original_lr")]


def stale_policies(profile: str) -> list[str]:
    """The REINFORCE records whose reward model has been trained again since (as while a re-execution of the
    notebooks spans sessions): the sha256 they recorded differs from that of the weights now in their
    `reward_model` folder (no verdict where that folder holds none)."""
    stale = []
    for name in (n for n in NEEDED if n.startswith("reinforce")):
        record = load(f"results/{profile}/{name}.json")
        now = adapter_digest(record["config"]["reward_model"]) if record else None
        if now and now != record["reward_model_sha256"]:
            stale.append(name)
    return stale


def missing_records(profile: str) -> list[str]:
    problems = []
    for name in needed(profile):
        record = load(f"results/{profile}/{name}.json")
        if record is None:
            problems.append(f"results/{profile}/{name}.json is missing: run {NEEDED[name]} at profile '{profile}'")
        elif record["profile"] != profile:
            problems.append(f"results/{profile}/{name}.json says profile {record['profile']!r}, expected {profile!r}")
    if profile == "cpu":  # the published report: the assignment's own settings and the reply lengths, never "not run yet"
        problems += [f"{path} is missing: run {command}" for path, command in PUBLISHED_EXTRA.items() if not load(path)]
    return problems


def seed_records(profile: str, seeds: dict | None, run: str) -> list[dict] | None:
    """The records of a configuration's extra seeds (make seeds), or None while any is missing."""
    if seeds is None or run in seeds["incomplete"]:
        return None
    return [load(f"results/{profile}/seeds/{run}_seed{s}.json") for s in seeds["seeds"][1:]]


def code_versions(records: dict[str, dict]) -> dict[str, list[str]]:
    """code_version -> the records it made."""
    out: dict[str, list[str]] = {}
    for name, record in records.items():
        out.setdefault(record["code_version"], []).append(name)
    return out


def values(profile: str) -> dict:
    """Everything report.typ shows beyond the records' own numbers: the verdicts and the parts that exist."""
    rec = {name: load(f"results/{profile}/{name}.json") for name in needed(profile)}
    studies = {name: load(f"results/{profile}/{name}.json") for name in STUDIES}
    seeds, overopt = studies["seeds"], studies["overoptimization"]
    rm_names = [n for n in rec if n.startswith("rm_")]
    original = load("results/full/reinforce_ema.json") if profile != "full" else rec["reinforce_ema"]
    ledger = load("results/rerun.json")
    return {
        "studies": [name for name, summary in studies.items() if summary is not None],
        "original_settings": original is not None and load("results/full/rm_scalar.json") is not None,
        "sft_lengths": load(f"results/{profile}/sft_reply_lengths.json") is not None,
        "stale": stale_policies(profile),
        "one_code": verdicts.one_code(list(rec.values())), "code_versions": code_versions(rec),
        "ablation_versions": sorted(set((studies["rm_ablation"] or {}).get("code_versions", {}).values())
                                    - set(code_versions(rec))),  # the ablation's records that older code made
        "findings": verdicts.findings(rec["rm_scalar"], rec["reinforce_ema"], rec["comparison"]),
        "sanity": verdicts.sanity_checks(rec["rm_scalar"]["sanity_checks"]),
        "losses": {n: verdicts.rm_losses(rec[n]) for n in rm_names}
        | ({"full/rm_scalar": verdicts.rm_losses(load("results/full/rm_scalar.json"))}
           if load("results/full/rm_scalar.json") else {}),
        "prob_wider_than_uniform": verdicts.wider_than_uniform(rec["rm_prob"]["metrics"]["dist_var_mean"]),
        "judges": judges(rec, profile),
        "ending": verdicts.ending_the_turn(rec["reinforce_ema"]),
        "rankings": verdicts.rankings(seeds),
        "baseline": verdicts.baseline(seeds),
        "rloo_ranked": verdicts.ranking(seeds, "reinforce_rloo", "reinforce_ema", "reward_delta_mean"),
        "sampled_reward": verdicts.sampled_reward(seeds),
        "collapses": verdicts.collapses(policy_runs(profile, rec, seeds)),
        "seed_cost": verdicts.same_machine_cost(seed_records(profile, seeds, "reinforce_ema"),
                                                seed_records(profile, seeds, "reinforce_rloo")),
        "overopt": verdicts.overoptimization(overopt),
        "ablation": verdicts.best_variant(studies["rm_ablation"]),
        "rerun": None if ledger is None else {"parts": sum(len(s["parts"]) for s in ledger["steps"].values()),
                                              "hours": sum(rerun.hours(s) for s in ledger["steps"].values())},
    }


def judges(rec: dict, profile: str) -> dict:
    """How far the judges agree (`verdicts.judge_agreement`): the scalar and the E[p] reward model on the validation
    pairs, and the over-optimisation study's proxy and judge, where they exist."""
    proxy, judge = (load(f"results/{profile}/overopt/rm_{role}.json") for role in ("proxy", "judge"))
    return {"scalar_vs_prob": verdicts.judge_agreement(rec["rm_scalar"]["margins"], rec["rm_prob"]["margins"]),
            "proxy_vs_judge": verdicts.judge_agreement(proxy["margins"], judge["margins"]) if proxy and judge else None}


def policy_runs(profile: str, rec: dict, seeds: dict | None) -> dict[str, dict]:
    """Every REINFORCE run of the seeded configurations: the notebooks' (seed 0) and the seeds study's."""
    out = {name: r for name, r in rec.items() if name.startswith("reinforce_")}
    for base in (seeds or {}).get("configs", {}):
        for s in seeds["seeds"][1:]:
            r = load(f"results/{profile}/seeds/{base}_seed{s}.json")
            if r:
                out[f"{base}_seed{s}"] = r
    return out


def build(profile: str, output: Path | None = None) -> Path:
    import typst

    problems = missing_records(profile)
    if problems:
        raise SystemExit("Cannot build the report:\n  " + "\n  ".join(problems))
    stale = stale_policies(profile)
    if stale:
        print(f"warning: {', '.join(stale)} optimised a reward model that has been trained again since: re-run "
              "their notebook (the report says so)", file=sys.stderr)
    output = output or ROOT / "report" / ("report.pdf" if profile == "cpu" else f"report-{profile}.pdf")
    typst.compile(str(ROOT / "report" / "report.typ"), output=str(output), root=str(ROOT),
                  sys_inputs={"profile": profile, "values": json.dumps(values(profile))})
    return output


if __name__ == "__main__":
    from alignlib.config import default_profile_name

    print("wrote", build(os.environ.get("ALIGNLIB_PROFILE") or default_profile_name()).relative_to(ROOT))
