"""Studies: groups of runs that each answer one question, too long for a notebook on a CPU.

    python -m alignlib.studies rm-ablation                      # make rm-ablation
    python -m alignlib.studies rm-ablation --variants all_linear

Each run writes its own record (results/<profile>/<study>/<variant>.json) as soon as it ends, and
continues from its checkpoint when interrupted; a run whose record exists with the same settings
is skipped. So a study can be stopped at any time and started again, over several sessions, and
the notebooks read whatever records exist.

The scalar reward model's ablation (`rm_ablation`) tunes on the development pairs that the profile
carves from the training split (`DataConfig.n_development`), never on the validation pairs: each
variant is trained on the profile's training pairs (or a multiple of them) and scored on the
development pairs; the validation pairs judge only the settings chosen from it, in notebook 02.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from . import config, data, models, results, runs, stats

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# variant -> (changes to the profile's scalar RM, training pairs as a multiple of the profile's)
RM_ABLATION = {
    "baseline": ({}, 1),  # the profile's rm_scalar: LoRA on q_proj and v_proj, one epoch
    "all_linear": ({"lora_target_modules": ALL_LINEAR}, 1),
    "two_epochs": ({"epochs": 2}, 1),
    "more_pairs": ({}, 2),
}
RM_ABLATION_DIR = "rm_dev"


def _same(a, b) -> bool:
    """Equal once written as JSON (tuples become lists)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def already_done(name: str, profile_name: str, settings: dict) -> bool:
    """Whether the record `name` exists and was made with these settings (its "config")."""
    path = results.ROOT / "results" / profile_name / f"{name}.json"
    return path.exists() and _same(json.loads(path.read_text())["config"], settings)


def rm_ablation_runs(profile, variants=None) -> list[tuple[str, config.Profile, config.RewardModelConfig, dict]]:
    """(record name, profile with the variant's training-pair cap, RM config, extra config) of each variant."""
    if not profile.data.n_development:
        raise ValueError(f"profile {profile.name!r} carves no development pairs (DataConfig.n_development = 0); "
                         "the ablation tunes on them: run it at the cpu profile (ALIGNLIB_PROFILE=cpu)")
    unknown = set(variants or ()) - set(RM_ABLATION)
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {sorted(unknown)}; choose from {list(RM_ABLATION)}")
    out = []
    for variant in variants or RM_ABLATION:
        changes, factor = RM_ABLATION[variant]
        cap = profile.data.max_train_pairs and profile.data.max_train_pairs * factor
        variant_profile = dataclasses.replace(profile, data=config.with_overrides(profile.data, max_train_pairs=cap))
        extra = {"study": "rm_ablation", "variant": variant, "evaluated_on": "development",
                 "train_pairs_factor": factor}
        out.append((f"{RM_ABLATION_DIR}/{variant}", variant_profile, config.with_overrides(profile.rm_scalar, **changes),
                    extra))
    return out


def rm_ablation(profile, variants=None) -> None:
    """Train and score each variant not yet done (see the module's docstring)."""
    tokenizer, uncut = None, None
    for name, variant_profile, cfg, extra in rm_ablation_runs(profile, variants):
        settings = {"data": dataclasses.asdict(variant_profile.data), "rm": dataclasses.asdict(cfg), **extra}
        if already_done(name, profile.name, settings):
            print(f"[alignlib] {name}: done (results/{profile.name}/{name}.json)")
            continue
        if uncut is None:
            tokenizer = models.load_tokenizer()
            uncut = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None))
        cap = variant_profile.data.max_train_pairs
        if cap is not None and cap > len(uncut.train):
            raise ValueError(f"{name} needs {cap} training pairs; the data has {len(uncut.train)}")
        prefs = data.PreferenceData(uncut.train[:cap], uncut.development, uncut.source)  # scored on development
        print(f"[alignlib] {name}: training on {len(prefs.train)} pairs, scoring {len(prefs.validation)} development pairs")
        runs.reward_model_run(name, variant_profile, cfg, tokenizer, prefs, extra_config=extra)


def rm_ablation_table(profile_name: str):
    """One row per finished variant: what it changes, its development accuracy and loss, and its
    accuracy minus the baseline's on the same development pairs (paired bootstrap interval)."""
    import pandas as pd

    folder = results.ROOT / "results" / profile_name / RM_ABLATION_DIR
    records = {v: json.loads((folder / f"{v}.json").read_text()) for v in RM_ABLATION if (folder / f"{v}.json").exists()}
    base = records.get("baseline")
    rows = []
    for variant, r in records.items():
        m, rm = r["metrics"], r["config"]["rm"]
        row = {"variant": variant, "train pairs": m["train_pairs"], "LoRA on": ", ".join(rm["lora_target_modules"]),
               "epochs": rm["epochs"], "dev accuracy": m["val_accuracy"], "dev accuracy 95% CI": m["val_accuracy_ci95"],
               "dev loss": m["val_loss"], "train min": m["train_wall_time_s"] / 60}
        if base is not None:
            d = stats.paired_accuracy_difference(r["margins"], base["margins"])
            row.update({"vs baseline": d["accuracy_diff"], "vs baseline 95% CI": d["accuracy_diff_ci95"]})
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignlib.studies", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=("rm-ablation",))
    parser.add_argument("--variants", nargs="+", help=f"default: all ({', '.join(RM_ABLATION)})")
    args = parser.parse_args(argv)
    profile = config.get_profile()
    rm_ablation(profile, args.variants)
    print(rm_ablation_table(profile.name).to_string(index=False))


if __name__ == "__main__":
    main()
