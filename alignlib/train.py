"""Train from the command line: one process, or several under `accelerate launch`.

    python -m alignlib.train rm                      # the scalar reward model of notebook 02
    python -m alignlib.train rm --labels 10          # the probabilistic one of notebook 04
    python -m alignlib.train reinforce               # REINFORCE with the EMA baseline (notebook 03)
    python -m alignlib.train rm --profile smoke      # a profile other than $ALIGNLIB_PROFILE's
    python -m alignlib.train reinforce --baseline rloo --kl-beta 0.05 --reward-model rm_prob
    accelerate launch --config_file configs/accelerate/ddp.yaml -m alignlib.train reinforce

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

# torch and the models are imported in `main`, after the arguments are parsed: --help and a
# mistyped argument answer at once instead of after the 15 s that importing them takes

DEFAULT_NAMES = {1: "rm_scalar", 10: "rm_prob"}
PROFILES = ("full", "cpu", "smoke")  # config.PROFILES (tests/test_train.py checks they agree)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alignlib.train", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)  # the options of both loops
    common.add_argument("--profile", choices=PROFILES,
                        help="run profile (default: $ALIGNLIB_PROFILE, else full with CUDA, else cpu)")
    loops = parser.add_subparsers(dest="loop", required=True)
    rm = loops.add_parser("rm", help="train a reward model", parents=[common])
    rm.add_argument("--labels", type=int, choices=(1, 10), default=1, help="1: scalar head; 10: scores 1..10")
    rm.add_argument("--name", help="record name (default rm_scalar / rm_prob)")
    rm.add_argument("--publish", action="store_true", help="also save the adapter under results/<profile>/adapters/")
    rl = loops.add_parser("reinforce", help="fine-tune the policy with REINFORCE against a trained reward model",
                          parents=[common])
    rl.add_argument("--baseline", choices=("ema", "rloo"), default="ema",
                    help="rloo: 2 replies per prompt and half the prompts per iteration, as notebook 03")
    rl.add_argument("--kl-beta", type=float, default=None, help="KL penalty to the SFT model (default: the profile's)")
    rl.add_argument("--reward-model", default="rm_scalar", help="the reward model's name (rm_scalar or rm_prob)")
    rl.add_argument("--name", help="record name (default reinforce_<baseline>[_kl])")
    return parser.parse_args(argv)


def reinforce_config(profile, args) -> tuple[str, config.ReinforceConfig]:
    """(record name, config) of a REINFORCE run asked for on the command line."""
    from . import config

    cfg = profile.reinforce
    if args.baseline == "rloo":
        cfg = config.with_overrides(cfg, baseline="rloo", samples_per_prompt=2, prompts_per_iter=cfg.prompts_per_iter // 2)
    if args.kl_beta is not None:
        cfg = config.with_overrides(cfg, kl_beta=args.kl_beta)
    return args.name or f"reinforce_{args.baseline}" + ("_kl" if cfg.kl_beta > 0 else ""), cfg


def main(argv=None) -> dict | None:
    args = parse(argv)
    from . import config, data, models, runs, scoring

    profile = config.get_profile(args.profile)  # None: $ALIGNLIB_PROFILE, else the hardware's default
    if args.loop == "rm":
        tokenizer = models.load_tokenizer()
        cfg = profile.rm_scalar if args.labels == 1 else profile.rm_prob
        prefs = data.load_preference_data(profile.data)
        record = runs.reward_model_run(args.name or DEFAULT_NAMES[args.labels], profile, cfg, tokenizer, prefs,
                                       publish=args.publish)[0]
    else:
        name, cfg = reinforce_config(profile, args)
        adapter = runs.rm_adapter_dir(profile.name, args.reward_model)
        notes = models.reward_model_notes(adapter)  # the policy and the prompts follow what the RM learned on
        models.follow_weights_of(notes)
        tokenizer = models.load_tokenizer()
        prefs = data.load_preference_data(config.with_overrides(profile.data, max_train_pairs=None),
                                          source=data.source_setting(notes.get("data_source")))
        rm = models.load_reward_model(adapter, data_source=prefs.source)
        scorer = scoring.RewardScorer(rm, tokenizer, profile.data.max_length, profile.rm_scalar.eval_batch_size, cfg.amp)
        record = runs.reinforce_run(name, profile, cfg, runs.reinforce_setup(profile, tokenizer, scorer.score, adapter,
                                                                             prefs))
    if record is not None:  # the main process
        keys = ("val_accuracy", "val_loss", "reward_delta_mean", "reward_delta_ci95", "win_rate", "kl_to_sft")
        print(json.dumps({"record": f"results/{profile.name}/{record['name']}.json",
                          **{k: record["metrics"][k] for k in keys if k in record["metrics"]}}, indent=1))
    return record


if __name__ == "__main__":
    main()
