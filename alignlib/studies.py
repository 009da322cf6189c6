"""Studies: groups of runs that each answer one question, too long for a notebook on a CPU.

    python -m alignlib.studies rm-ablation                      # make rm-ablation
    python -m alignlib.studies rm-ablation --variants all_linear
    python -m alignlib.studies seeds                            # make seeds (after the notebooks' runs)
    python -m alignlib.studies overoptimization                 # make overoptimization (after notebook 03)

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
import tempfile
from pathlib import Path

import numpy as np

from . import config, data, models, reinforce_loop, results, runs, stats

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The settings the variants change, as they were before tuning: each variant is this plus its changes, so
# that setting the chosen variant in the profile leaves every recorded variant's settings as they were.
RM_ABLATION_BASE = {"lora_target_modules": ("q_proj", "v_proj"), "epochs": 1}
# variant -> (changes to RM_ABLATION_BASE, training pairs as a multiple of the profile's)
RM_ABLATION = {
    "baseline": ({}, 1),  # LoRA on q_proj and v_proj, one epoch
    "all_linear": ({"lora_target_modules": ALL_LINEAR}, 1),
    "two_epochs": ({"epochs": 2}, 1),
    "more_pairs": ({}, 2),
}
RM_ABLATION_DIR = "rm_dev"


def already_done(name: str, profile_name: str, settings: dict) -> bool:
    """Whether the record `name` exists and was made with these settings (its "config")."""
    path = results.record_path(name, profile_name)
    return path.exists() and results.same_settings(json.loads(path.read_text())["config"], settings)


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
        cfg = config.with_overrides(profile.rm_scalar, **{**RM_ABLATION_BASE, **changes})
        out.append((f"{RM_ABLATION_DIR}/{variant}", variant_profile, cfg, extra))
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


def rm_ablation_records(profile_name: str) -> dict:
    """variant -> its record, for the variants that have one."""
    paths = {v: results.record_path(f"{RM_ABLATION_DIR}/{v}", profile_name) for v in RM_ABLATION}
    return {v: json.loads(path.read_text()) for v, path in paths.items() if path.exists()}


def rm_ablation_table(profile_name: str, records: dict | None = None):
    """One row per finished variant: what it changes, its development accuracy and loss, and its
    accuracy minus the baseline's on the same development pairs (paired bootstrap interval)."""
    import pandas as pd

    records = rm_ablation_records(profile_name) if records is None else records
    base = records.get("baseline")
    rows = []
    for variant, r in records.items():
        m, rm = r["metrics"], r["config"]["rm"]
        row = {"variant": variant, "train pairs": m["train_pairs"], "LoRA on": ", ".join(rm["lora_target_modules"]),
               "epochs": rm["epochs"], "dev pairs": m["n_pairs"], "dev accuracy": m["val_accuracy"],
               "dev accuracy 95% CI": m["val_accuracy_ci95"], "dev loss": m["val_loss"],
               "train min": m["train_wall_time_s"] / 60, "peak memory GB": r["peak_memory_mb"] / 1024}
        if base is not None:
            d = stats.paired_accuracy_difference(r["margins"], base["margins"])
            row.update({"vs baseline": d["accuracy_diff"], "vs baseline 95% CI": d["accuracy_diff_ci95"]})
        rows.append(row)
    return pd.DataFrame(rows)


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
    records = rm_ablation_records(profile_name)
    rows = json.loads(rm_ablation_table(profile_name, records).to_json(orient="records"))
    versions = {v: r.get("code_version") for v, r in records.items()}
    missing = [v for v in RM_ABLATION if v not in versions]
    out = {"evaluated_on": "development", "variants": rows, "missing": missing, "code_versions": versions,
           "rule": CHOICE_RULE, "chosen": None if missing or "baseline" not in records else choose_rm_variant(rows)}
    path = results.results_dir(profile_name) / "rm_ablation.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


# ------------------------------------------------------------------------------------ seeds

# The notebooks' REINFORCE runs, repeated with other training seeds. Seed 0 is the notebook's own run:
# each repeat takes its settings (config, reward model, reward mode) from that run's record, so the
# notebooks stay the one place that defines them.
SEEDED_RUNS = ("reinforce_ema", "reinforce_rloo", "reinforce_ema_kl", "reinforce_prob_expected", "reinforce_prob_sampled")
SEEDS = (0, 1, 2)
SEEDS_DIR = "seeds"
# the rankings the report makes, checked over seeds: (A, B, metrics compared); both are judged by the same RM
SEED_RANKINGS = (("reinforce_rloo", "reinforce_ema", ("reward_delta_mean", "win_rate")),
                 ("reinforce_ema_kl", "reinforce_ema", ("reward_delta_mean", "win_rate", "kl_to_sft")),
                 ("reinforce_prob_sampled", "reinforce_prob_expected", ("reward_delta_mean", "win_rate")))
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
    local, published = results.resolve(recorded), results.resolve(f"results/{profile_name}/adapters/{Path(recorded).name}")
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
    to results/<profile>/seeds.json. Configurations with a missing seed are listed under "incomplete".
    "rankings": each comparison of SEED_RANKINGS whose two configurations are complete, A minus B over
    seeds (`stats.seed_difference`: diff, ci95, holds)."""
    out = {"seeds": list(seeds), "metrics": list(SEED_METRICS), "configs": {}, "incomplete": {}}
    for base in names:
        files = {s: results.record_path(f"{SEEDS_DIR}/{base}_seed{s}" if s else base, profile_name) for s in seeds}
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
    out["rankings"] = [{"a": a, "b": b, "metric": m, **stats.seed_difference(out["configs"][a]["per_seed"][m],
                                                                           out["configs"][b]["per_seed"][m])}
                       for a, b, metrics in SEED_RANKINGS if a in out["configs"] and b in out["configs"] for m in metrics]
    return out | flat_seed_keys(out["configs"])


def flat_seed_keys(configs: dict) -> dict:
    """DESIGN.md's flat keys of seeds.json, `<config>/<metric>` with the config's short name (ema, rloo, ema_kl,
    prob_expected, prob_sampled): n_seeds, and the mean and the interval over seeds of the gain and the win-rate."""
    out = {}
    for name, c in configs.items():
        short, gain, win = name.removeprefix("reinforce_"), c["across_seeds"]["reward_delta_mean"], c["across_seeds"]["win_rate"]
        out |= {f"{short}/n_seeds": gain["n"], f"{short}/reward_delta_mean": gain["mean"],
                f"{short}/reward_delta_seed_sd": gain["sd"], f"{short}/reward_delta_seed_ci95": gain["ci95"],
                f"{short}/win_rate_mean": win["mean"], f"{short}/win_rate_seed_ci95": win["ci95"]}
    return out


def write_seeds_summary(profile_name: str) -> None:
    path = results.results_dir(profile_name) / "seeds.json"
    path.write_text(json.dumps(seeds_summary(profile_name), indent=1) + "\n")
    print("wrote", results.portable(path))


# -------------------------------------------------------------------------- over-optimisation

# Gao et al. (2023)'s question on a small scale: the policy optimises a proxy RM trained on one half of the
# training prompts; a judge RM trained on the other half, which the policy never sees, scores the same
# replies. Both are measured, with the KL to SFT, on the held-out prompts every `every` iterations.
OVEROPT_DIR = "overopt"
OVEROPT_SCALE = {"full": (600, 50), "cpu": (200, 20), "smoke": (2, 1)}  # profile -> (iterations, evaluate every)
OVEROPT_POLICIES = ("reinforce_ema", "reinforce_ema_kl")  # notebook 03's runs, whose records give the settings


def halves_by_prompt(pairs: list, seed: int) -> tuple[list, list]:
    """(proxy half, judge half) of the training pairs: no prompt in both, sizes within one prompt's pairs."""
    return data.split_by_prompt(pairs, len(pairs) // 2, seed)


def overopt_point(iteration: int, policy, ref, setup, judge, sft_judge, cfg) -> dict:
    """Proxy and judge reward of the policy's replies to the held-out prompts against SFT's, and its KL to SFT."""
    from . import evaluate

    gen = evaluate.generate_for_eval(policy, setup.tokenizer, setup.eval_prompts, cfg)
    proxy = stats.paired_reward_comparison(setup.sft["rewards"], np.asarray(setup.scorer(setup.eval_prompts, gen["texts"])))
    judged = stats.paired_reward_comparison(sft_judge, np.asarray(judge(setup.eval_prompts, gen["texts"])))
    return {"iteration": iteration, "proxy": proxy, "judge": judged,
            "kl_to_sft": evaluate.kl_to_reference(policy, ref, setup.tokenizer, setup.eval_prompts, gen["tokens"], cfg),
            "length_rl": float(np.mean([len(t) for t in gen["tokens"]])), "ended_frac_rl": float(np.mean(gen["ended"]))}


def overopt_run(name: str, profile, cfg, setup, judge, every: int, settings: dict) -> dict:
    """Train `cfg.iterations` iterations of REINFORCE against the setup's (proxy) scorer in parts of
    `every`, and after each part write the record's "points" (`overopt_point`), the first at iteration 0.
    An interrupted run continues from its last checkpoint and keeps the points it had."""
    path = results.record_path(name, profile.name)
    old = json.loads(path.read_text()) if path.exists() else None
    points = old["points"] if old is not None and results.same_settings(old["config"], settings) else []
    policy, ref = models.load_policy(), models.load_policy()
    sft_judge = np.asarray(judge(setup.eval_prompts, setup.sft["texts"]))
    results.seed_everything(cfg.seed)  # a resumed part restores the checkpoint's random state instead
    clock = results.Timer()
    # the parts continue one another through the checkpoint (optimizer, baseline, prompt order); smoke has none
    state = runs.state_dir(profile, name) or Path(tempfile.mkdtemp(prefix="alignlib-overopt-"))
    for target in range(0, cfg.iterations + 1, every):
        if any(p["iteration"] == target for p in points):
            continue
        if target:
            reinforce_loop.train_reinforce(policy, setup.tokenizer, setup.scorer, setup.train_prompts,
                                           config.with_overrides(cfg, iterations=target), ref_policy=ref,
                                           checkpoint_dir=state, checkpoint_every=every,  # continues the last part
                                           run_name=runs.tracker_project(profile, name))
        points.append(overopt_point(target, policy, ref, setup, judge, sft_judge, cfg))
        results.write_record(name, profile.name, model_source=models.source_of(policy), data_source=setup.data_source,
                             seed=cfg.seed, wall_time_s=clock.elapsed + (old or {}).get("wall_time_s", 0.0), amp=cfg.amp,
                             config=settings, metrics={"iterations_done": target, "complete": target == cfg.iterations},
                             points=points)
    return json.loads(path.read_text())


def overoptimization(profile) -> None:
    """The proxy and judge RMs (records overopt/rm_proxy and overopt/rm_judge), then each policy of
    OVEROPT_POLICIES against the proxy, judged along the way (records overopt/<policy>)."""
    from . import scoring

    iterations, every = OVEROPT_SCALE[profile.name]
    tokenizer = models.load_tokenizer()
    prefs = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None))
    halves = dict(zip(("proxy", "judge"), halves_by_prompt(prefs.train, profile.data.split_seed + 3)))
    scorers = {}
    for role, half in halves.items():
        name, cap = f"{OVEROPT_DIR}/rm_{role}", profile.data.max_train_pairs
        extra = {"study": "overoptimization", "half": role, "half_pairs": len(half)}
        settings = {"data": dataclasses.asdict(profile.data), "rm": dataclasses.asdict(profile.rm_scalar), **extra}
        if not already_done(name, profile.name, settings):  # published (except at smoke): a later session loads it
            half_prefs = data.PreferenceData(half[:cap], prefs.validation, prefs.source)
            runs.reward_model_run(name, profile, profile.rm_scalar, tokenizer, half_prefs, publish=True, extra_config=extra)
        adapter = results.resolve(results.read_record(name, profile.name)["adapter"])
        scorers[role] = adapter, scoring.RewardScorer(models.load_reward_model(adapter, 1), tokenizer,
                                                      profile.data.max_length, profile.rm_scalar.eval_batch_size,
                                                      profile.reinforce.amp)
    (proxy_adapter, proxy), (_, judge) = scorers["proxy"], scorers["judge"]
    setup = runs.reinforce_setup(profile, tokenizer, proxy.score, proxy_adapter, prefs)
    for base in OVEROPT_POLICIES:
        cfg = config.with_overrides(config.ReinforceConfig(**results.read_record(base, profile.name)["config"]["reinforce"]),
                                    iterations=iterations)
        settings = {"reinforce": dataclasses.asdict(cfg), "reward_model": setup.reward_model, "every": every,
                    "settings_of": base}
        overopt_run(f"{OVEROPT_DIR}/{base}", profile, cfg, setup, judge.score, every, settings)
    write_overoptimization_summary(profile.name)


def write_overoptimization_summary(profile_name: str) -> dict:
    """results/<profile>/overoptimization.json: the two RMs' validation accuracy and how far their
    margins agree, and each policy's points (iteration, KL, proxy and judge gain in SFT-reward sds); and
    its figure, fig_overoptimization.png."""
    def read(n):
        path = results.record_path(f"{OVEROPT_DIR}/{n}", profile_name)
        return json.loads(path.read_text()) if path.exists() else None

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
                                                 "length_rl": p["length_rl"]} for p in r["points"]]}
    path = results.results_dir(profile_name) / "overoptimization.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    if out["policies"]:
        from . import plots

        plots.overoptimization(out, path.with_name("fig_overoptimization.png"))
    return out


# ------------------------------------------------------------------------- reading the summaries

SUMMARIES = {"rm_ablation": "make rm-ablation", "seeds": "make seeds", "overoptimization": "make overoptimization"}


def read_summary(name: str, profile_name: str) -> dict | None:
    """A study's summary (results/<profile>/<name>.json, the output root's, else the published one), or None, saying
    which command makes it, when it is not there."""
    path = results.resolve(f"results/{profile_name}/{name}.json")
    if not path.exists():
        print(f"{results.portable(path)} does not exist yet: `ALIGNLIB_PROFILE={profile_name} {SUMMARIES[name]}` "
              "writes it (hours on a CPU; resumable)")
        return None
    return json.loads(path.read_text())


def seeds_table(summary: dict, labels: dict):
    """One row per complete configuration: the reward gain of each seed, and the gain, win-rate and KL over
    seeds (mean and t interval; KL mean and sd)."""
    import pandas as pd

    rows = {}
    for name, c in summary["configs"].items():
        a, row = c["across_seeds"], {}
        for i, seed in enumerate(summary["seeds"]):
            row[f"gain, seed {seed}"] = c["per_seed"]["reward_delta_mean"][i]
        row |= {"gain: mean over seeds": a["reward_delta_mean"]["mean"], "gain: 95% CI over seeds": a["reward_delta_mean"]["ci95"],
                "win-rate: mean": a["win_rate"]["mean"], "win-rate: 95% CI over seeds": a["win_rate"]["ci95"],
                "KL: mean": a["kl_to_sft"]["mean"], "KL: sd": a["kl_to_sft"]["sd"]}
        rows[labels.get(name, name)] = row
    return pd.DataFrame(rows).T


def rankings_table(summary: dict, labels: dict):
    """Each ranking the report makes, A minus B over seeds, and whether it holds."""
    import pandas as pd

    return pd.DataFrame([{"A": labels.get(r["a"], r["a"]), "B": labels.get(r["b"], r["b"]), "metric": r["metric"],
                          "A - B": r["diff"], "95% CI over seeds": r["ci95"], "holds": r["holds"]} for r in summary["rankings"]])


def overoptimization_table(summary: dict, labels: dict):
    """One row per (policy, iteration): KL to SFT, proxy and judge gain (SFT-reward sds), judge win-rate."""
    import pandas as pd

    return pd.DataFrame([{"policy": labels.get(name, name), "iteration": p["iteration"], "KL to SFT": p["kl_to_sft"],
                          "proxy gain (sd)": p["proxy_gain_sd"], "judge gain (sd)": p["judge_gain_sd"],
                          "judge win-rate": p["judge_win_rate"], "length": p["length_rl"]}
                         for name, run in summary["policies"].items() for p in run["points"]]).set_index(["policy", "iteration"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignlib.studies", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=("rm-ablation", "seeds", "overoptimization"))
    parser.add_argument("--variants", nargs="+", help=f"rm-ablation: default all ({', '.join(RM_ABLATION)})")
    parser.add_argument("--runs", nargs="+", choices=SEEDED_RUNS, default=SEEDED_RUNS, help="seeds: default all")
    args = parser.parse_args(argv)
    profile = config.get_profile()
    if args.study == "rm-ablation":
        rm_ablation(profile, args.variants)
        write_rm_ablation_summary(profile.name)
        print(rm_ablation_table(profile.name).to_string(index=False))
    elif args.study == "seeds":
        reinforce_seeds(profile, args.runs)
        write_seeds_summary(profile.name)
    else:
        overoptimization(profile)


if __name__ == "__main__":
    main()
