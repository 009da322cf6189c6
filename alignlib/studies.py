"""Studies: groups of runs that each answer one question, too long for a notebook on a CPU.

    python -m alignlib.studies rm-ablation                      # make rm-ablation
    python -m alignlib.studies rm-ablation --variants all_linear
    python -m alignlib.studies seeds                            # make seeds (after the notebooks' runs)

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


# ------------------------------------------------------------------------------------ seeds

# The notebooks' REINFORCE runs, repeated with other training seeds. Seed 0 is the notebook's own run:
# each repeat takes its settings (config, reward model, reward mode) from that run's record, so the
# notebooks stay the one place that defines them.
SEEDED_RUNS = ("reinforce_ema", "reinforce_rloo", "reinforce_ema_kl", "reinforce_prob_expected", "reinforce_prob_sampled")
SEEDS = (0, 1, 2)
SEEDS_DIR = "seeds"
SEED_METRICS = ("reward_delta_mean", "reward_delta_sd_units", "win_rate", "kl_to_sft", "length_rl", "ended_frac_rl",
                "reward_delta_same_length", "length_share_of_gain", "distinct2_rl", "advantage_sq_mean", "advantage_mean",
                "advantage_var")


def seed_runs(profile_name: str, names=SEEDED_RUNS, seeds=SEEDS) -> list[tuple[str, config.ReinforceConfig, dict]]:
    """(record name, config, extra config) of each repeat (seed != 0), from the seed-0 records."""
    out = []
    for base in names:
        record = results.read_record(base, profile_name)  # names the notebook to run when missing
        cfg = config.ReinforceConfig(**record["config"]["reinforce"])
        extra = {"reward_model": record["config"]["reward_model"], "reward_mode": record["config"].get("reward_mode", "expected"),
                 "seed_of": base}
        out += [(f"{SEEDS_DIR}/{base}_seed{seed}", config.with_overrides(cfg, seed=seed), extra) for seed in seeds if seed]
    return out


def recorded_adapter(profile_name: str, recorded: str):
    """The reward model a run record names: its local checkpoint if this machine has it, else the copy
    notebook 02/04 published from the same model (results/<profile>/adapters/<name>)."""
    from pathlib import Path

    local, published = results.ROOT / recorded, results.ROOT / "results" / profile_name / "adapters" / Path(recorded).name
    for adapter in (local, published):
        if (adapter / "adapter_config.json").exists():
            return adapter
    raise FileNotFoundError(f"the reward model {recorded} is neither here nor published as {published}; "
                            "run notebook 02 (scalar) or 04 (probabilistic) first")


def reinforce_seeds(profile, names=SEEDED_RUNS, seeds=SEEDS) -> None:
    """Train and judge each repeat not yet done, on the held-out prompts and with the reward model of its seed-0 run."""
    from . import scoring

    setups = {}
    for name, cfg, extra in seed_runs(profile.name, names, seeds):
        settings = {"reinforce": dataclasses.asdict(cfg), **extra}
        if already_done(name, profile.name, settings):
            print(f"[alignlib] {name}: done (results/{profile.name}/{name}.json)")
            continue
        adapter = recorded_adapter(profile.name, extra["reward_model"])
        if adapter not in setups:  # one setup per reward model: prompts, judge and SFT replies as in notebooks 03/04
            tokenizer = models.load_tokenizer()
            labels = json.loads((adapter / "alignlib_rm.json").read_text())["num_labels"]
            scorer = scoring.RewardScorer(models.load_reward_model(adapter, labels), tokenizer, profile.data.max_length,
                                          profile.rm_scalar.eval_batch_size, cfg.amp)
            prefs = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None))
            setups[adapter] = scorer, runs.reinforce_setup(profile, tokenizer, scorer.score, adapter, prefs)
        scorer, setup = setups[adapter]
        reward_fn = scorer.sample if extra["reward_mode"] == "sampled" else scorer.score
        print(f"[alignlib] {name}: training")
        runs.reinforce_run(name, profile, cfg, setup, reward_fn,
                           extra_config={k: v for k, v in extra.items() if k != "reward_model"})


def seeds_summary(profile_name: str, names=SEEDED_RUNS, seeds=SEEDS) -> dict:
    """Across-seed statistics of each seeded configuration whose runs all exist (`stats.across_seeds`
    of every metric in SEED_METRICS), the per-seed values, and the code that made each run; written
    to results/<profile>/seeds.json. Configurations with a missing seed are listed under "incomplete"."""
    out = {"seeds": list(seeds), "metrics": list(SEED_METRICS), "configs": {}, "incomplete": {}}
    for base in names:
        files = {s: results.ROOT / "results" / profile_name / (f"{SEEDS_DIR}/{base}_seed{s}.json" if s else f"{base}.json")
                 for s in seeds}
        missing = [s for s, f in files.items() if not f.exists()]
        if missing:
            out["incomplete"][base] = {"missing_seeds": missing}
            continue
        recs = {s: json.loads(f.read_text()) for s, f in files.items()}
        per_seed = {m: [recs[s]["metrics"].get(m) for s in seeds] for m in SEED_METRICS}
        out["configs"][base] = {
            "per_seed": per_seed,
            "across_seeds": {m: stats.across_seeds(v) for m, v in per_seed.items() if None not in v},
            "within_run_ci95": {s: recs[s]["metrics"]["reward_delta_ci95"] for s in seeds},
            "code_versions": sorted({str(r.get("code_version")) for r in recs.values()}),
        }
    return out


def write_seeds_summary(profile_name: str) -> None:
    path = results.results_dir(profile_name) / "seeds.json"
    path.write_text(json.dumps(seeds_summary(profile_name), indent=1) + "\n")
    print("wrote", path.relative_to(results.ROOT))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignlib.studies", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=("rm-ablation", "seeds"))
    parser.add_argument("--variants", nargs="+", help=f"rm-ablation: default all ({', '.join(RM_ABLATION)})")
    parser.add_argument("--runs", nargs="+", choices=SEEDED_RUNS, default=SEEDED_RUNS, help="seeds: default all")
    args = parser.parse_args(argv)
    profile = config.get_profile()
    if args.study == "rm-ablation":
        rm_ablation(profile, args.variants)
        print(rm_ablation_table(profile.name).to_string(index=False))
    else:
        reinforce_seeds(profile, args.runs)
        write_seeds_summary(profile.name)


if __name__ == "__main__":
    main()
