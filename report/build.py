"""Build report/report.pdf from the run records of one profile (Typst, through the `typst` package).

    ALIGNLIB_PROFILE=cpu python report/build.py

Every number in the PDF is read from results/<profile>/*.json by report.typ itself; this
script only checks that the records it needs exist (naming the notebook that writes each
missing one), tells the report which studies' summaries exist (their sections are left out until
then, with the command that makes them), and compiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# record -> the notebook that writes it
NEEDED = {
    "data": "notebooks/01_data.ipynb",
    "rm_scalar": "notebooks/02_scalar_reward_model.ipynb",
    "rm_scalar_original_lr": "notebooks/02_scalar_reward_model.ipynb",  # not at the full profile (it is rm_scalar there)
    "reinforce_ema": "notebooks/03_reinforce.ipynb",
    "reinforce_rloo": "notebooks/03_reinforce.ipynb",
    "reinforce_ema_kl": "notebooks/03_reinforce.ipynb",
    "rm_prob": "notebooks/04_probabilistic_reward_model.ipynb",
    "rm_prob_beats": "notebooks/04_probabilistic_reward_model.ipynb",
    "reinforce_prob_expected": "notebooks/04_probabilistic_reward_model.ipynb",
    "reinforce_prob_sampled": "notebooks/04_probabilistic_reward_model.ipynb",
    "comparison": "notebooks/05_comparison.ipynb",
}

# the studies' summaries (alignlib/studies.py SUMMARIES): each adds its section to the report once it exists
STUDIES = ("rm_ablation", "seeds", "overoptimization")


def studies_present(profile: str) -> list[str]:
    return [name for name in STUDIES if (ROOT / "results" / profile / f"{name}.json").exists()]


# the records of the full profile (the original settings, on a GPU) that the report sets beside its own
# record -> the command that makes it on a GPU (the README's full section names the ones still to run)
FULL_COLUMN = {"rm_scalar": "python -m alignlib.train rm --publish",
               "rm_prob": "python -m alignlib.train rm --labels 10 --publish",
               "reinforce_ema": "python -m alignlib.train reinforce"}


def full_column(profile: str) -> list[str]:
    """The full profile's records of FULL_COLUMN that exist, for the column beside this profile's: none
    without the scalar RM (a GPU session may have run only some; the column says which are still to run)."""
    have = [n for n in FULL_COLUMN if (ROOT / "results" / "full" / f"{n}.json").exists()]
    return have if profile != "full" and "rm_scalar" in have else []


def stale_policies(profile: str) -> list[str]:
    """The REINFORCE records whose reward model has been trained again since, as while a re-execution of the
    notebooks spans sessions: the sha256 of the weights they were trained against (`reward_model_sha256`,
    recorded since baf8bb5) differs from the adapter now in their `reward_model` folder, or, for older records
    without it, the reward model's record (named by that folder) was created after theirs."""
    stale = []
    for name in NEEDED:
        path = ROOT / "results" / profile / f"{name}.json"
        record = json.loads(path.read_text()) if name.startswith("reinforce") and path.exists() else {}
        folder = Path(record.get("config", {}).get("reward_model", "-"))
        weights, rm_path = ROOT / folder / "adapter_model.safetensors", ROOT / "results" / profile / f"{folder.name}.json"
        if record.get("reward_model_sha256"):
            if weights.exists() and hashlib.sha256(weights.read_bytes()).hexdigest() != record["reward_model_sha256"]:
                stale.append(name)
        elif rm_path.exists() and record.get("created", "") < json.loads(rm_path.read_text()).get("created", ""):
            stale.append(name)
    return stale


def missing_records(profile: str) -> list[str]:
    problems = []
    for name, notebook in NEEDED.items():
        if profile == "full" and name == "rm_scalar_original_lr":
            continue
        path = ROOT / "results" / profile / f"{name}.json"
        if not path.exists():
            problems.append(f"results/{profile}/{name}.json is missing: run {notebook} at profile '{profile}'")
            continue
        record = json.loads(path.read_text())
        if record.get("profile") != profile:
            problems.append(f"{path} says profile {record.get('profile')!r}, expected {profile!r}")
    for name in ("bench.json", "speed_profile.json"):
        if not (ROOT / "results" / name).exists():
            problems.append(f"results/{name} is missing: run `make bench`")
    for name in ("bench_native_bf16_cpu.json", "speed_profile_native_bf16_cpu.json"):  # another machine's, kept
        if not (ROOT / "results" / name).exists():
            problems.append(f"results/{name} is missing: it is committed (`git checkout -- results/{name}`)")
    return problems


def build(profile: str, output: Path | None = None) -> Path:
    import typst

    problems = missing_records(profile)
    if problems:
        raise SystemExit("Cannot build the report:\n  " + "\n  ".join(problems))
    output = output or ROOT / "report" / ("report.pdf" if profile == "cpu" else f"report-{profile}.pdf")
    full, stale = full_column(profile), stale_policies(profile)
    if stale:
        print(f"warning: {', '.join(stale)} optimised a reward model that has been trained again since: re-run "
              "their notebook (the report says so)", file=sys.stderr)
    typst.compile(str(ROOT / "report" / "report.typ"), output=str(output), root=str(ROOT),
                  sys_inputs={"profile": profile, "studies": ",".join(studies_present(profile)),
                              "full": ",".join(full), "stale": ",".join(stale),
                              **{f"command_{name}": command for name, command in FULL_COLUMN.items()},
                              "full_seeds": "1" if "reinforce_ema" in full
                              and (ROOT / "results" / "full" / "seeds.json").exists() else ""})
    return output


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from alignlib.config import default_profile_name

    profile = os.environ.get("ALIGNLIB_PROFILE") or default_profile_name()
    print("wrote", build(profile).relative_to(ROOT))
