"""Studies: groups of runs that each answer one question, too long for a notebook on a CPU.

    python -m alignlib rm-ablation                      # make rm-ablation
    python -m alignlib rm-ablation --variants all_linear
    python -m alignlib seeds                            # make seeds (after the notebooks' runs)
    python -m alignlib overoptimization                 # make overoptimization (after notebook 03)
    python -m alignlib sft-lengths                      # how long SFT's held-out replies are, uncut

Each run writes its own record (results/<profile>/<study>/<variant>.json) as soon as it ends, and
continues from its checkpoint when interrupted; a run this code already recorded with the same
settings is skipped (`records.reusable`). So a study can be stopped at any time and started again,
over several sessions, and the notebooks read whatever records exist. Each study ends by writing its
summary (`alignlib.summaries`). The variants and the studies' scale are the profile's (`config`).

The scalar reward model's ablation (`rm_ablation`) tunes on the development pairs that the profile
carves from the training split (`DataConfig.n_development`), never on the validation pairs: each
variant is trained on the profile's training pairs (or a multiple of them) and scored on the
development pairs; the validation pairs judge only the settings chosen from it, in notebook 02.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from . import (config, data, evaluate, machine, models, prompts, records, reinforce_loop, runs, scoring, stats, summaries,
               tracking)
from .config import OVEROPT_POLICIES
from .summaries import OVEROPT_DIR, RM_ABLATION_DIR, SEEDED_RUNS, SEEDS_DIR


def done(name: str, profile_name: str, settings: dict, amp: str, digests: dict | None = None) -> bool:
    """Whether this code already recorded run `name` with these settings (`records.reusable`, always asked)."""
    return records.reusable(name, profile_name, settings, amp, digests, always=True) is not None


def rm_ablation_runs(profile, variants=None) -> list[tuple[str, config.Profile, config.RewardModelConfig, dict]]:
    """(record name, profile with the variant's training-pair cap, RM config, extra config) of each variant."""
    if not profile.data.n_development:
        raise ValueError(f"profile {profile.name!r} carves no development pairs (DataConfig.n_development = 0); "
                         "the ablation tunes on them: run it at the cpu profile (ALIGNLIB_PROFILE=cpu)")
    unknown = set(variants or ()) - set(config.RM_ABLATION)
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {sorted(unknown)}; choose from {list(config.RM_ABLATION)}")
    out = []
    for variant in variants or config.RM_ABLATION:
        changes, factor = config.RM_ABLATION[variant]
        cap = profile.data.max_train_pairs and profile.data.max_train_pairs * factor
        variant_profile = dataclasses.replace(profile, data=config.with_overrides(profile.data, max_train_pairs=cap))
        extra = {"study": "rm_ablation", "variant": variant, "evaluated_on": "development",
                 "train_pairs_factor": factor}
        cfg = config.with_overrides(profile.rm_scalar, **{**config.RM_ABLATION_BASE, **changes})
        out.append((f"{RM_ABLATION_DIR}/{variant}", variant_profile, cfg, extra))
    return out


def rm_ablation(profile, variants=None) -> None:
    """Train and score each variant not yet done (see the module's docstring)."""
    tokenizer, uncut = None, None
    for name, variant_profile, cfg, extra in rm_ablation_runs(profile, variants):
        settings = {"data": dataclasses.asdict(variant_profile.data), "rm": dataclasses.asdict(cfg), **extra}
        if done(name, profile.name, settings, cfg.amp):
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


# ------------------------------------------------------------------------------------ seeds

# The notebooks' REINFORCE runs, repeated with other training seeds. Seed 0 is the notebook's own run:
# each repeat takes its settings (config, reward model, reward mode) from that run's record, so the
# notebooks stay the one place that defines them.
def seed_runs(profile_name: str, names=SEEDED_RUNS) -> list[tuple[str, config.ReinforceConfig, dict]]:
    """(record name, config, extra config) of each repeat (seed != 0), from the seed-0 records."""
    out, seeds = [], config.get_profile(profile_name).studies.seeds
    for base in names:
        record = records.read_record(base, profile_name)  # names the notebook to run when missing
        cfg = config.ReinforceConfig(**record["config"]["reinforce"])
        extra = {"reward_model": record["config"]["reward_model"], "reward_mode": record["config"].get("reward_mode", "expected"),
                 "seed_of": base}
        out += [(f"{SEEDS_DIR}/{base}_seed{seed}", config.with_overrides(cfg, seed=seed), extra) for seed in seeds if seed]
    return out


def reinforce_seeds(profile, names=SEEDED_RUNS) -> None:
    """Train and judge each repeat not yet done, on the held-out prompts and with the reward model of its seed-0 run."""
    setups = {}
    for name, cfg, extra in seed_runs(profile.name, names):
        adapter = records.find_adapter(profile.name, extra["reward_model"])
        settings = {"reinforce": dataclasses.asdict(cfg), **extra}
        if done(name, profile.name, settings, cfg.amp, {"reward_model_sha256": records.adapter_digest(adapter)}):
            continue
        if adapter not in setups:  # one setup per reward model: prompts, judge and SFT replies as in notebooks 03/04
            tokenizer = models.load_tokenizer()
            scorer = scoring.load_scorer(adapter, tokenizer, profile, cfg.amp)
            prefs = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None))
            setups[adapter] = scorer, runs.reinforce_setup(profile, tokenizer, scorer.score, adapter, prefs)
        scorer, setup = setups[adapter]
        reward_fn = scorer.sample if extra["reward_mode"] == "sampled" else scorer.score
        print(f"[alignlib] {name}: training")
        runs.reinforce_run(name, profile, cfg, setup, reward_fn,
                           extra_config={k: v for k, v in extra.items() if k != "reward_model"})


# -------------------------------------------------------------------------- over-optimisation

# Gao et al. (2023)'s question on a small scale: the policy optimises a proxy RM trained on one half of the
# training prompts; a judge RM trained on the other half, which the policy never sees, scores the same
# replies. Both are measured, with the KL to SFT, on the held-out prompts every `every` iterations.
def halves_by_prompt(pairs: list, seed: int) -> tuple[list, list]:
    """(proxy half, judge half) of the training pairs: no prompt in both, sizes within one prompt's pairs."""
    return data.split_by_prompt(pairs, len(pairs) // 2, seed)


def overopt_point(iteration: int, policy, ref, setup, judge, sft_judge, cfg) -> dict:
    """Proxy and judge reward of the policy's replies to the held-out prompts against SFT's, and its KL to SFT.
    The replies take at most the training cap (`cfg.max_new_tokens`), as SFT's do here (`setup.sft_at_cap`): ten
    points per run at the evaluation's longer budget would take longer than the training."""
    gen = evaluate.generate_for_eval(policy, setup.tokenizer, setup.eval_prompts, cfg, max_new_tokens=cfg.max_new_tokens)
    proxy = stats.paired_reward_comparison(setup.sft_at_cap["rewards"],
                                           np.asarray(setup.scorer(setup.eval_prompts, gen["texts"])))
    judged = stats.paired_reward_comparison(sft_judge, np.asarray(judge(setup.eval_prompts, gen["texts"])))
    return {"iteration": iteration, "proxy": proxy, "judge": judged,
            "kl_to_sft": evaluate.kl_to_reference(policy, ref, setup.tokenizer, setup.eval_prompts, gen["tokens"], cfg),
            "length_rl": float(np.mean([len(t) for t in gen["tokens"]])), "ended_frac_rl": float(np.mean(gen["ended"])),
            "budget": gen["budget"]}


def overopt_run(name: str, profile, cfg, setup, judge, every: int, settings: dict) -> dict:
    """Train `cfg.iterations` iterations of REINFORCE against the setup's (proxy) scorer in parts of
    `every`, and after each part write the record's "points" (`overopt_point`), the first at iteration 0.
    An interrupted run continues from its last checkpoint and keeps the points it had."""
    digests = {"reward_model_sha256": records.adapter_digest(setup.reward_model)}
    old = records.made_here(name, profile.name)
    points = old["points"] if old is not None and records.same_run(old, settings, cfg.amp, digests) else []
    policy, ref = models.load_policy(), models.load_policy()
    sft_judge = np.asarray(judge(setup.eval_prompts, setup.sft_at_cap["texts"]))
    runs.start(cfg.seed)  # a resumed part restores the checkpoint's random state instead
    clock = machine.Timer()
    # the parts continue one another through the checkpoint (optimizer, baseline, prompt order); smoke has none
    state = records.state_dir(profile, name) or Path(tempfile.mkdtemp(prefix="alignlib-overopt-"))
    for target in range(0, cfg.iterations + 1, every):
        if any(p["iteration"] == target for p in points):
            continue
        if target:
            reinforce_loop.train_reinforce(policy, setup.tokenizer, setup.scorer, setup.train_prompts,
                                           config.with_overrides(cfg, iterations=target), ref_policy=ref,
                                           checkpoint_dir=state, checkpoint_every=every,  # continues the last part
                                           run_name=tracking.project_name(profile, name))
        points.append(overopt_point(target, policy, ref, setup, judge, sft_judge, cfg))
        records.write_record(name, profile.name, model_source=models.source_of(policy), data_source=setup.data_source,
                             seed=cfg.seed, wall_time_s=clock.elapsed + (old or {}).get("wall_time_s", 0.0), amp=cfg.amp,
                             config=settings, metrics={"iterations_done": target, "complete": target == cfg.iterations},
                             points=points, **digests)
    return records.made_here(name, profile.name)


def overoptimization(profile) -> None:
    """The proxy and judge RMs (records overopt/rm_proxy and overopt/rm_judge), then each policy of
    OVEROPT_POLICIES against the proxy, judged along the way (records overopt/<policy>)."""
    iterations, every = profile.studies.overopt_iterations, profile.studies.overopt_every
    tokenizer = models.load_tokenizer()
    prefs = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None))
    halves = dict(zip(("proxy", "judge"), halves_by_prompt(prefs.train, profile.data.split_seed + 3)))
    scorers = {}
    for role, half in halves.items():
        name, cap = f"{OVEROPT_DIR}/rm_{role}", profile.data.max_train_pairs
        extra = {"study": "overoptimization", "half": role, "half_pairs": len(half)}
        settings = {"data": dataclasses.asdict(profile.data), "rm": dataclasses.asdict(profile.rm_scalar), **extra}
        if not done(name, profile.name, settings, profile.rm_scalar.amp):  # published (except at smoke): a later session loads it
            half_prefs = data.PreferenceData(half[:cap], prefs.validation, prefs.source)
            runs.reward_model_run(name, profile, profile.rm_scalar, tokenizer, half_prefs, publish=True, extra_config=extra)
        adapter = records.find_adapter(profile.name, records.read_record(name, profile.name)["adapter"])
        scorers[role] = adapter, scoring.load_scorer(adapter, tokenizer, profile, data_source=prefs.source)
    (proxy_adapter, proxy), (_, judge) = scorers["proxy"], scorers["judge"]
    setup = runs.reinforce_setup(profile, tokenizer, proxy.score, proxy_adapter, prefs)
    for base in OVEROPT_POLICIES:
        cfg = config.with_overrides(config.ReinforceConfig(**records.read_record(base, profile.name)["config"]["reinforce"]),
                                    iterations=iterations)
        settings = {"reinforce": dataclasses.asdict(cfg), "reward_model": setup.reward_model, "every": every,
                    "settings_of": base}
        overopt_run(f"{OVEROPT_DIR}/{base}", profile, cfg, setup, judge.score, every, settings)
    summaries.write_overoptimization_summary(profile.name)


def sft_reply_lengths(profile, budget: int) -> dict:
    """The SFT model's replies to the held-out evaluation prompts with room for `budget` new tokens: how long they
    are, how many close their turn within each cap, and the cap within which 90% do -> results/<profile>/
    sft_reply_lengths.json. The evaluation's reply budget is chosen from it. Same prompts, weights, data, decoding
    and seeds as the runs' evaluation (`runs.sft_eval_replies`, which keeps them: with the evaluation's own budget
    these are the SFT replies the runs are judged against), so the first `max_new_tokens` tokens of each reply are
    those a run judged at its training cap."""
    source = runs.follow_reward_model(records.find_adapter(profile.name, "rm_scalar"))  # the evaluation's weights, data
    tokenizer = models.load_tokenizer()
    prefs = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None), source=source)
    cfg = config.with_overrides(profile.reinforce, eval_max_new_tokens=budget)
    clock, policy = machine.Timer(), models.load_policy()
    gen = runs.sft_eval_replies(profile, policy, tokenizer, prompts.evaluation_prompts(prefs.validation, tokenizer, cfg), cfg)
    lengths = [len(t) for t in gen["tokens"]]
    caps = [c for c in (64, 96, 128, 192, 256, 384, 512, 640, 768, 896) if c < budget] + [budget]
    metrics = {"n_prompts": len(lengths), "budget": budget, "training_cap": profile.reinforce.max_new_tokens,
               "ended_within": stats.ended_within(lengths, gen["ended"], caps),
               "cap_for_90pct_ended": stats.cap_for_share(lengths, gen["ended"], 0.9),
               "median_length_of_ended": (float(np.median([n for n, e in zip(lengths, gen["ended"]) if e]))
                                          if any(gen["ended"]) else None)}
    records.write_record("sft_reply_lengths", profile.name, model_source=models.source_of(policy),
                         data_source=prefs.source, seed=config.EVAL_SEED, wall_time_s=clock.elapsed,
                         config={"reinforce": dataclasses.asdict(cfg)}, metrics=metrics, amp=cfg.amp,
                         lengths=lengths, ended=gen["ended"])
    return metrics
