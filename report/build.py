"""Build report/report.pdf from the run records of one profile (Typst, through the `typst` package).

    ALIGNLIB_PROFILE=cpu python -m report.build

report.typ reads the numbers from results/<profile>/*.json and formats them. What they say (the verdicts of
`alignlib.verdicts`) and which optional parts exist (the studies' summaries, the `full` profile's records, a
second machine's `make bench`) are decided here and handed to it as one JSON, `sys.inputs.values`. A missing
record stops the build, naming the notebook or command that writes it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from alignlib import verdicts
from alignlib.records import WRITTEN_BY, adapter_digest
from report import ROOT, load

# record -> the notebook that writes it, in the notebooks' order; rm_scalar_original_lr (notebook 02's run at the
# original learning rate) is read by no later notebook, and not made at the full profile (it is rm_scalar there)
NEEDED = {name: f"notebooks/{notebook}.ipynb" for name, notebook in sorted(
    {**WRITTEN_BY, "rm_scalar_original_lr": "02_scalar_reward_model"}.items(), key=lambda item: item[1])}
STUDIES = ("rm_ablation", "seeds", "overoptimization")  # each adds its section once its summary exists
# the full profile's records (the original settings, on a GPU) set beside this profile's -> the command that makes each
FULL_COLUMN = {"rm_scalar": "python -m alignlib rm --publish",
               "rm_prob": "python -m alignlib rm --labels 10 --publish",
               "reinforce_ema": "python -m alignlib reinforce"}
# make bench's records: this machine's (needed), and those of the machine with native bf16 (shown where present)
BENCHES = {"bench": ("bench.json", "speed_profile.json"),
           "native": ("bench_native_bf16_cpu.json", "speed_profile_native_bf16_cpu.json")}


def needed(profile: str) -> list[str]:
    return [n for n in NEEDED if not (profile == "full" and n == "rm_scalar_original_lr")]


def full_column(profile: str) -> list[str]:
    """The records of FULL_COLUMN that results/full/ holds, for the column beside this profile's: none without
    the scalar RM (a GPU session may have run only some; the column says which are still to run)."""
    have = [n for n in FULL_COLUMN if load(f"results/full/{n}.json")]
    return have if profile != "full" and "rm_scalar" in have else []


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
    problems += [f"results/{name} is missing: run `make bench`" for name in BENCHES["bench"] if not load(f"results/{name}")]
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
    seeds, full = studies["seeds"], full_column(profile)
    benches = {k: {"bench": load(f"results/{b}"), "profile": load(f"results/{p}")} for k, (b, p) in BENCHES.items()}
    pairs = benches["bench"]["profile"]["precision_pairs"]  # the profile's precision first in even pairs
    rm_names = [n for n in rec if n.startswith("rm_")]
    return {
        "studies": [name for name, summary in studies.items() if summary is not None],
        "full": full, "full_seeds": "reinforce_ema" in full and load("results/full/seeds.json") is not None,
        "commands": FULL_COLUMN, "stale": stale_policies(profile),
        "machines": list(dict.fromkeys(r["hardware"] for r in rec.values())),
        "one_code": verdicts.one_code(list(rec.values())), "code_versions": code_versions(rec),
        "findings": verdicts.findings(rec["rm_scalar"], rec["reinforce_ema"], rec["comparison"]),
        "sanity": verdicts.sanity_checks(rec["rm_scalar"]["sanity_checks"]),
        "losses": {n: verdicts.rm_losses(rec[n]) for n in rm_names}
        | {f"full/{n}": verdicts.rm_losses(load(f"results/full/{n}.json")) for n in full if n.startswith("rm_")},
        "prob_wider_than_uniform": verdicts.wider_than_uniform(rec["rm_prob"]["metrics"]["dist_var_mean"]),
        "rankings": verdicts.rankings(seeds), "full_rankings": verdicts.rankings(load("results/full/seeds.json")),
        "rloo_ranked": verdicts.ranking(seeds, "reinforce_rloo", "reinforce_ema", "reward_delta_mean"),
        "kl_penalty": verdicts.kl_penalty(seeds),
        "sampled_reward": verdicts.sampled_reward(seeds),
        "seed_cost": verdicts.same_machine_cost(seed_records(profile, seeds, "reinforce_ema"),
                                                seed_records(profile, seeds, "reinforce_rloo")),
        "overopt": verdicts.overoptimization(studies["overoptimization"]),
        "ablation": verdicts.best_variant(studies["rm_ablation"]),
        "bench": {k: verdicts.bench_verdicts(b["bench"]) for k, b in benches.items() if b["bench"] and b["profile"]},
        "run_order": verdicts.run_order(pairs, next(iter(pairs)), "forced none (float32)"),
    }


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
