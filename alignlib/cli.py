"""The command line: the runs of the notebooks and the studies, one process or several under `accelerate launch`.

    python -m alignlib rm                      # the scalar reward model of notebook 02
    python -m alignlib rm --labels 10          # the probabilistic one of notebook 04
    python -m alignlib reinforce               # REINFORCE with the EMA baseline (notebook 03)
    python -m alignlib rm --profile smoke      # a profile other than $ALIGNLIB_PROFILE's
    python -m alignlib reinforce --baseline rloo --kl-beta 0.05 --reward-model rm_prob
    accelerate launch --config_file configs/accelerate/ddp.yaml -m alignlib reinforce
    python -m alignlib rm-ablation             # make rm-ablation (the studies: see alignlib/studies.py)
    python -m alignlib seeds                   # make seeds
    python -m alignlib overoptimization        # make overoptimization
    python -m alignlib sft-lengths --budget 512  # SFT's held-out replies with room to end: their lengths
    python -m alignlib gpu-check [--dry-run]   # make gpu-check (see alignlib/gpu_check.py)

The run profile is ``--profile``, else ``$ALIGNLIB_PROFILE`` (default: full with CUDA, else cpu),
and the SFT model ``$ALIGNLIB_MODEL`` (default SmolLM2-135M-Instruct). A run trains, evaluates
and writes the same record as the notebooks (results/<profile>/<name>.json, from the main
process), and resumes from its checkpoint when interrupted. REINFORCE needs a trained reward
model first (``rm``). ``$ALIGNLIB_TRACKER`` (tensorboard, wandb, trackio, ...; default none) also
sends each step's metrics to that experiment tracker (see alignlib/tracking.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import config

# torch and the models are imported in `main`, after the arguments are parsed: --help and a
# mistyped argument answer at once instead of after the 15 s that importing them takes

DEFAULT_NAMES = {1: "rm_scalar", 10: "rm_prob"}
PROFILES = ("full", "cpu", "smoke")  # config.PROFILES (tests/test_cli.py checks they agree)
STUDIES = ("rm-ablation", "seeds", "overoptimization", "sft-lengths")


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alignlib", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)  # every command's
    common.add_argument("--profile", choices=PROFILES,
                        help="run profile (default: $ALIGNLIB_PROFILE, else full with CUDA, else cpu)")
    commands = parser.add_subparsers(dest="command", required=True)
    rm = commands.add_parser("rm", help="train a reward model", parents=[common])
    rm.add_argument("--labels", type=int, choices=(1, 10), default=1, help="1: scalar head; 10: scores 1..10")
    rm.add_argument("--name", help="record name (default rm_scalar / rm_prob)")
    rm.add_argument("--publish", action="store_true", help="also save the adapter under results/<profile>/adapters/")
    rl = commands.add_parser("reinforce", help="fine-tune the policy with REINFORCE against a trained reward model",
                             parents=[common])
    rl.add_argument("--baseline", choices=("ema", "rloo", "none"), default="ema",
                    help="rloo: 2 replies per prompt and half the prompts per iteration, as notebook 03 (config.rloo); "
                    "none: the advantage is the reward itself")
    rl.add_argument("--kl-beta", type=float, default=None, help="KL penalty to the SFT model (default: the profile's)")
    rl.add_argument("--reward-model", default="rm_scalar", help="the reward model's name (rm_scalar or rm_prob)")
    rl.add_argument("--name", help="record name (default reinforce_<baseline>[_kl])")
    ablation = commands.add_parser("rm-ablation", help="the scalar reward model's settings tried on the development "
                                   "pairs", parents=[common])
    ablation.add_argument("--variants", nargs="+", help="default: every variant of config.RM_ABLATION")
    seeds = commands.add_parser("seeds", help="the notebooks' REINFORCE runs again with other training seeds",
                                parents=[common])
    seeds.add_argument("--runs", nargs="+", help="default: every run of summaries.SEEDED_RUNS")
    commands.add_parser("overoptimization", help="a proxy and a held-out judge reward model, and REINFORCE "
                        "against the proxy judged along the way", parents=[common])
    lengths = commands.add_parser("sft-lengths", help="the SFT model's replies to the held-out prompts with room "
                                  "to end their turn: lengths, and the cap within which 90%% end", parents=[common])
    lengths.add_argument("--budget", type=int, default=None,
                         help="new tokens each reply may take (default: the evaluation's, config.EVAL_REPLY_BUDGET)")
    commands.add_parser("gpu-check", help="on a CUDA GPU: the tests that apply there and short runs at the full "
                        "profile's settings (its own options: python -m alignlib gpu-check --help)", add_help=False)
    return parser.parse_args(argv)


def reinforce_config(profile, args) -> tuple[str, config.ReinforceConfig]:
    """(record name, config) of a REINFORCE run asked for on the command line."""
    from . import config

    cfg = {"rloo": config.rloo, "none": config.without_baseline}.get(args.baseline, lambda c: c)(profile.reinforce)
    if args.kl_beta is not None:
        cfg = config.with_kl(cfg, args.kl_beta)
    return args.name or f"reinforce_{args.baseline}" + ("_kl" if cfg.kl_beta > 0 else ""), cfg


def train(args) -> dict | None:
    """`rm` and `reinforce`: one run, its record written as the notebooks write it."""
    from . import config, data, models, records, runs, scoring

    profile = config.get_profile(args.profile)  # None: $ALIGNLIB_PROFILE, else the hardware's default
    if args.command == "rm":
        tokenizer = models.load_tokenizer()
        cfg = profile.rm_scalar if args.labels == 1 else profile.rm_prob
        prefs = data.load_preference_data(profile.data)
        return runs.reward_model_run(args.name or DEFAULT_NAMES[args.labels], profile, cfg, tokenizer, prefs,
                                     publish=args.publish)[0]
    name, cfg = reinforce_config(profile, args)
    adapter = records.find_adapter(profile.name, args.reward_model)
    source = runs.follow_reward_model(adapter)  # the policy and the prompts follow what the RM learned on
    tokenizer = models.load_tokenizer()
    prefs = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None), source=source)
    scorer = scoring.load_scorer(adapter, tokenizer, profile, cfg.amp, data_source=prefs.source)
    return runs.reinforce_run(name, profile, cfg, runs.reinforce_setup(profile, tokenizer, scorer.score, adapter, prefs))


def study(args) -> None:
    """`rm-ablation`, `seeds`, `overoptimization`: each study's runs not yet recorded, then its summary."""
    from . import config, studies, summaries, tables

    profile = config.get_profile(args.profile)
    if args.command == "rm-ablation":
        studies.rm_ablation(profile, args.variants)
        summaries.write_rm_ablation_summary(profile.name)
        print(tables.rm_ablation_table(summaries.rm_ablation_records(profile.name)).to_string(index=False))
    elif args.command == "seeds":
        studies.reinforce_seeds(profile, args.runs or summaries.SEEDED_RUNS)
        summaries.write_seeds_summary(profile.name)
    elif args.command == "sft-lengths":
        print(json.dumps(studies.sft_reply_lengths(profile, args.budget or profile.reinforce.eval_budget), indent=1))
    else:
        studies.overoptimization(profile)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["gpu-check"]:  # its own options
        from . import gpu_check

        return gpu_check.main(argv[1:])
    args = parse(argv)
    if args.command in STUDIES:
        return study(args)
    record = train(args)
    if record is not None:  # the main process
        keys = ("val_accuracy", "val_loss", "reward_delta_mean", "reward_delta_ci95", "win_rate", "kl_to_sft")
        print(json.dumps({"record": f"results/{record['profile']}/{record['name']}.json",
                          **{k: record["metrics"][k] for k in keys if k in record["metrics"]}}, indent=1))
    return record
