"""Runs: seed, train, evaluate, save and write the run record, the same way for every variant.

This is the one module that seeds runs and writes training records (`records.write_record`):
the notebooks call `reward_model_run` and `reinforce_run` once per variant, so that every variant
is trained and judged in exactly the same way. Notebook 03 runs its first REINFORCE loop on the
page (`reinforce_loop.train_reinforce`) and hands the trained policy to `record_reinforce_run`.

Under `accelerate launch` every process trains (the loops split the work), and only the main
process evaluates, saves and writes the record; the other processes' runs return None.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import data, evaluate, machine, models, precision, prompts, records, reinforce_loop, reward_model_loop, scoring, tracking
from .config import EVAL_SEED, RELOAD_CHECK_PAIRS


TRAIN_ENV = "ALIGNLIB_TRAIN"


def train_long_runs(choice: bool | None, profile, names) -> bool:
    """The one switch of a notebook: train its long runs (`names`, the records they write) here, or show the
    published records. `choice` True or False decides; None takes ``$ALIGNLIB_TRAIN`` when it is set
    (`make report` sets 1), else trains on a GPU and at the smoke profile (seconds) and shows the published
    records on a CPU (hours there). Prints what each run costs where it was measured (`records.cost_note`)."""
    if choice is None and os.environ.get(TRAIN_ENV, "").strip():
        setting = os.environ[TRAIN_ENV].strip().lower()
        if setting not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(f"${TRAIN_ENV}={os.environ[TRAIN_ENV]!r}: use 1 (train the long runs) or 0 (show the "
                             "published records)")
        choice = setting in ("1", "true", "yes")
    device = machine.device()
    train = choice if choice is not None else (device.type == "cuda" or profile.name == "smoke")
    print("What the long runs of this notebook cost, measured:")
    for name in names:
        print("  " + records.cost_note(name))
    if train:
        print(f"-> training them here ({device.type}, profile {profile.name!r})")
    else:
        print(f"-> showing the published {records.PUBLISHED!r} records instead ({device.type}): set TRAIN = True "
              f"(or ${TRAIN_ENV}=1) to train them here")
    return train


def follow_reward_model(adapter: Path | str) -> str:
    """Make this process use the SFT weights that the reward model saved at `adapter` learned on
    (`models.follow_weights_of`); returns the `data.load_preference_data` source of the data it learned on. A run
    against a reward model, or one showing it, takes its policy, prompts and pairs from what it was trained on."""
    notes = models.reward_model_notes(records.resolve(adapter))
    models.follow_weights_of(notes)
    return data.source_setting(notes.get("data_source"))


def follow_published(name: str) -> str:
    """`follow_reward_model` of the published reward model `name`, for a notebook that shows it."""
    return follow_reward_model(f"results/{records.PUBLISHED}/adapters/{name}")


def start(seed: int) -> None:
    """The start of every run: pin the code its record will name (`records.loaded_code_version`: the code this
    process imported, however long the run takes), then seed it (`machine.seed_everything`)."""
    records.loaded_code_version()
    machine.seed_everything(seed)

def pairs_seen(history: dict, n_pairs: int, cfg, processes: int = 1) -> int:
    """Preference pairs a reward-model run trained on, every epoch counted: n_pairs per epoch, unless
    `max_steps` stopped it first (each step takes batch_size * grad_accum pairs from each process). The
    loop's last incomplete step, if any, is dropped, so this over-counts by less than one step's pairs."""
    return min(n_pairs * cfg.epochs, len(history["step"]) * cfg.batch_size * cfg.grad_accum * processes)


def save_and_check(model, name: str, profile, cfg, tokenizer, pairs, publish: bool,
                   data_source: str | None = None) -> tuple[Path, float]:
    """Save the adapter under checkpoints/<profile>/<name>/ (and with `publish`, except at the smoke
    profile, under results/<profile>/adapters/<name>/), reload it as a user would, with plain PEFT,
    and check that it gives the trained model's rewards on the first RELOAD_CHECK_PAIRS `pairs`
    (same batches for both); returns (adapter, the largest reward difference). `data_source` (the training
    pairs' source) is saved with it."""
    max_length = profile.data.max_length
    adapter = records.checkpoints_dir(profile.name) / name
    models.save_reward_model(model, adapter, max_length, data_source)
    if publish and profile.name != "smoke":
        adapter = records.results_dir(profile.name) / "adapters" / name
        models.save_reward_model(model, adapter, max_length, data_source)
    reloaded = models.load_reward_model(adapter, cfg.num_labels)
    check = pairs[:RELOAD_CHECK_PAIRS]
    trained, again = (scoring.pair_rewards(m, tokenizer, check, max_length, cfg.eval_batch_size, cfg.amp)
                      for m in (model, reloaded))
    diff = float(max(np.abs(trained[k] - again[k]).max() for k in ("chosen", "rejected")))
    scale = float(max(np.abs(trained[k]).max() for k in ("chosen", "rejected")))
    if not diff <= 1e-4 * max(1.0, scale):
        raise RuntimeError(f"the adapter saved in {adapter} does not reproduce the trained model's rewards on "
                           f"{len(check)} pairs (largest difference {diff:.3g}): the saved files are incomplete "
                           "or another base model was loaded")
    return adapter, diff


def reward_model_run(name: str, profile, cfg, tokenizer, prefs, publish: bool = False,
                     evaluate_before: bool = False, extra_config: dict | None = None) -> tuple[dict, object, dict]:
    """Train a reward model per `cfg` (seeded once, here), evaluate it on the validation pairs, save
    it, reload the saved adapter and check it gives the same rewards, and write its record, with
    the margin r(chosen) - r(rejected) of every validation pair (for paired comparisons of RMs).

    With `evaluate_before`, the untrained model is scored first (the record's "before_training").
    Returns (record, trained model, validation rewards as returned by `scoring.pair_rewards`);
    (None, trained model, None) in the processes other than the main one under `accelerate launch`.
    """
    settings = {"data": asdict(profile.data), "rm": asdict(cfg), **(extra_config or {})}
    reused = records.reusable(name, profile.name, settings, cfg.amp)
    if reused is not None and (records.resolve(reused["adapter"]) / "adapter_config.json").exists():
        return reused_reward_model(reused, profile, cfg, tokenizer, prefs)
    start(cfg.seed)
    clock, max_length, processes = machine.Timer(), profile.data.max_length, machine.process_state()
    model = models.new_reward_model(cfg)
    before = None
    if evaluate_before and processes.is_main_process:
        before = evaluate.validation_metrics(model, tokenizer, prefs.validation, max_length, cfg)[0]
    with machine.PeakMemory() as mem, machine.Timer() as train_time:
        history = reward_model_loop.train_reward_model(model, tokenizer, prefs.train, cfg, max_length,
                                                       checkpoint_dir=records.state_dir(profile, name),
                                                       run_name=tracking.project_name(profile, name))
    if not processes.is_main_process:
        return None, model, None
    metrics, val = evaluate.validation_metrics(model, tokenizer, prefs.validation, max_length, cfg)
    # the training time is every step's, also the steps before a resume (this process's timer saw only its own)
    train_s = sum(history["time/step"])
    metrics.update(machine.training_speed(models.train_flops_per_token(model), history,
                                          pairs_seen(history, len(prefs.train), cfg, processes.num_processes),
                                          train_s, precision.resolve(cfg.amp, machine.device()).dtype))
    metrics.update({"train_pairs": len(prefs.train), "peak_memory_train_mb": mem.peak_mb,
                    "others_cpu_share_train": mem.others_cpu_share,
                    "skipped_steps": precision.skipped_steps(history["optim/grad_norm"]),
                    "processes": processes.num_processes,
                    "pairs_per_step": cfg.batch_size * cfg.grad_accum * processes.num_processes})
    if before is not None:
        metrics.update({"val_accuracy_before": before["val_accuracy"], "val_loss_before": before["val_loss"]})
    adapter, metrics["reload_max_abs_diff"] = save_and_check(model, name, profile, cfg, tokenizer, prefs.validation,
                                                             publish, prefs.source)
    metrics["reload_pairs"] = min(RELOAD_CHECK_PAIRS, len(prefs.validation))
    scorer = scoring.RewardScorer(model, tokenizer, max_length, cfg.eval_batch_size, cfg.amp)
    records.write_record(
        name, profile.name, model_source=models.source_of(model), data_source=prefs.source, seed=cfg.seed,
        wall_time_s=clock.elapsed - train_time.seconds + train_s,
        config=settings, metrics=metrics, amp=cfg.amp, curve=history, adapter=records.portable(adapter),
        before_training=before, sanity_checks=evaluate.sanity_checks(scorer, prefs.train[0]),
        margins=val["chosen"] - val["rejected"])
    return records.read_record(name, profile.name), model, val


def reused_reward_model(record: dict, profile, cfg, tokenizer, prefs) -> tuple[dict, object, dict]:
    """`reward_model_run`'s return for a run it does not train again (`records.reusable`): the record, the
    saved adapter loaded (trainable weights as in training), and the validation pairs scored again, which
    must give the record's margins: a check that the adapter is the one the record describes."""
    model = models.load_reward_model(records.resolve(record["adapter"]), cfg.num_labels, trainable=True).eval()
    metrics, val = evaluate.validation_metrics(model, tokenizer, prefs.validation, profile.data.max_length, cfg)
    diff = float(np.abs((val["chosen"] - val["rejected"]) - np.asarray(record["margins"])).max())
    if not (metrics["val_accuracy"] == record["metrics"]["val_accuracy"] and diff <= 1e-3):
        raise RuntimeError(f"the adapter {record['adapter']} does not reproduce its record's validation margins "
                           f"(largest difference {diff:.3g}, accuracy {metrics['val_accuracy']:.4f} against "
                           f"{record['metrics']['val_accuracy']:.4f}): delete results/{profile.name}/{record['name']}.json "
                           "to train it again")
    print(f"[alignlib] {record['name']}: validation pairs scored again: accuracy {metrics['val_accuracy']:.4f} as "
          f"recorded (largest margin difference {diff:.1e})")
    return record, model, val


def published_reward_model(name: str, profile, cfg, tokenizer, prefs, pairs: int = 64) -> tuple[dict, object, dict]:
    """`reward_model_run`'s return without training it: the published record (`records.published_record`),
    the reward model it saved, and the first `pairs` validation pairs scored by it now (`scoring.pair_rewards`
    output), for the plots; the record holds the metrics of every validation pair. `prefs` must be the data
    the model learned on (`follow_published`)."""
    record = records.published_record(name)
    model = models.load_reward_model(records.resolve(record["adapter"]), cfg.num_labels,
                                     data_source=prefs.source).eval()
    _, val = evaluate.validation_metrics(model, tokenizer, prefs.validation[:pairs], profile.data.max_length, cfg)
    print(f"[alignlib] {name}: the first {len(val['chosen'])} validation pairs scored again for the plots below")
    return record, model, val


# ------------------------------------------------------------------------------------- REINFORCE


@dataclass
class ReinforceSetup:
    """What the REINFORCE runs of a notebook share: prompts, the reward model, and the SFT baseline.

    `scorer` (prompts, texts) -> (n,) rewards is the reward model's score: the training reward
    unless a run passes its own, and always the judge on the held-out `eval_prompts`. `sft` holds
    the SFT policy's replies to them with the evaluation's budget and their rewards
    (`sft_eval_replies` + "rewards"); `sft_at_cap` the same replies cut back to the training cap
    (`evaluate.cut_replies`), scored.
    """
    tokenizer: object
    scorer: Callable
    train_prompts: list
    train_prompts_skipped: int  # distinct training prompts over the prompt budget, left out
    eval_prompts: list
    sft: dict
    sft_at_cap: dict
    reward_model: str  # the RM's adapter, as `records.portable` writes it (recorded as config["reward_model"])
    data_source: str
    # the sources the RM was trained on ({"model_source", "data_source"}), and how they differ from this run's
    # (`models.source_mismatches`; empty unless $ALIGNLIB_ALLOW_RM_MISMATCH let a mismatched RM load)
    reward_model_trained_on: dict = field(default_factory=dict)
    reward_model_mismatch: dict = field(default_factory=dict)


def sft_eval_replies(profile, policy, tokenizer, eval_prompts: list, cfg) -> dict:
    """The SFT policy's replies to the held-out prompts (`evaluate.generate_for_eval` with the evaluation's
    budget), sampled once per profile, code, weights, decoding and precision, and kept under
    checkpoints/<profile>/sft_replies/ (not at the smoke profile): every run of a notebook or study is judged
    against the same SFT replies, which take half an hour at the `cpu` profile's budget on a 2-core CPU. The draws
    are seeded (EVAL_SEED), so a kept file holds exactly the replies sampling again would give."""
    resolved = precision.resolve(cfg.amp, machine.device())
    key = {"model_id": profile.model, "model_source": models.source_of(policy), "code": records.loaded_code_version(),
           "prompts": eval_prompts, "budget": cfg.eval_budget, "top_p": cfg.top_p, "temperature": cfg.temperature,
           "eval_batch_size": cfg.eval_batch_size, "max_prompt_tokens": cfg.max_prompt_tokens,
           "precision": str(resolved.dtype), "device": machine.device().type, "seed": EVAL_SEED}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = None if profile.name == "smoke" else records.checkpoints_dir(profile.name) / "sft_replies" / f"{digest}.json"
    if path is not None and path.exists():
        print(f"[alignlib] the SFT replies to the {len(eval_prompts)} held-out prompts, as sampled before: {records.portable(path)}")
        return json.loads(path.read_text())["replies"]
    gen = evaluate.generate_for_eval(policy, tokenizer, eval_prompts, cfg)
    if path is not None and "+dirty" not in key["code"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "replies": gen}, ensure_ascii=False))
    return gen


def reinforce_setup(profile, tokenizer, scorer, reward_model: Path | str, prefs) -> ReinforceSetup:
    """Training prompts (the distinct training prompts within the prompt budget), the evaluation
    prompts (`prompts.evaluation_prompts`), and the SFT policy's replies to them (`sft_eval_replies`),
    scored by `scorer`, also cut back to the training cap. `reward_model` is the adapter `scorer` uses
    (absolute, or relative to the repository)."""
    cfg = profile.reinforce
    train_prompts, skipped = prompts.unique_prompts(prefs.train, tokenizer, cfg.max_prompt_tokens)
    eval_prompts = prompts.evaluation_prompts(prefs.validation, tokenizer, cfg)
    policy = models.load_policy()
    sft = sft_eval_replies(profile, policy, tokenizer, eval_prompts, cfg)
    sft["rewards"] = np.asarray(scorer(eval_prompts, sft["texts"]))
    sft_at_cap = evaluate.cut_replies(sft, cfg.max_new_tokens, tokenizer)
    sft_at_cap["rewards"] = np.asarray(scorer(eval_prompts, sft_at_cap["texts"]))
    reward_model = records.resolve(reward_model)
    notes = models.reward_model_notes(reward_model)
    trained_on = {k: notes.get(k) for k in ("model_source", "data_source")}
    return ReinforceSetup(tokenizer, scorer, train_prompts, skipped, eval_prompts, sft, sft_at_cap,
                          records.portable(reward_model), prefs.source, trained_on,
                          models.source_mismatches(notes, models.source_of(policy), prefs.source))


def reinforce_run(name: str, profile, cfg, setup: ReinforceSetup, reward_fn: Callable | None = None,
                  extra_config: dict | None = None) -> dict:
    """Seed, train a fresh copy of the SFT policy with REINFORCE (reward `reward_fn`, default the
    setup's scorer), then `record_reinforce_run`. Training state is checkpointed under
    `records.state_dir(profile, name)`: re-running after an interruption continues where it stopped.
    Returns the record (None in the processes other than the main one under `accelerate launch`).
    With ``$ALIGNLIB_REUSE_RUNS=1``, a run this code already recorded with the same settings is not trained
    again (`records.reusable`)."""
    settings = {"reinforce": asdict(cfg), "reward_model": setup.reward_model, **(extra_config or {})}
    reused = records.reusable(name, profile.name, settings, cfg.amp,
                              {"reward_model_sha256": records.adapter_digest(setup.reward_model)})
    if reused is not None:
        return reused
    start(cfg.seed)
    policy, ref = models.load_policy(), models.load_policy()
    with machine.PeakMemory() as mem:
        history = reinforce_loop.train_reinforce(policy, setup.tokenizer, reward_fn or setup.scorer,
                                                 setup.train_prompts, cfg, ref_policy=ref,
                                                 checkpoint_dir=records.state_dir(profile, name),
                                                 run_name=tracking.project_name(profile, name))
    if not machine.process_state().is_main_process:
        return None
    return record_reinforce_run(name, profile, cfg, setup, policy, ref, history, mem.peak_mb, extra_config,
                                others_cpu_share=mem.others_cpu_share)


def record_reinforce_run(name: str, profile, cfg, setup: ReinforceSetup, policy, ref, history: dict,
                         peak_memory_train_mb: float, extra_config: dict | None = None,
                         others_cpu_share: float | None = None) -> dict:
    """Judge a trained policy against SFT on the held-out prompts, and write its run record.

    The policy's replies (with the evaluation's budget, `cfg.eval_budget`) are scored by `setup.scorer` and
    compared pairwise with SFT's (`evaluate.compare_policies`), and again cut back to the training cap
    (`evaluate.compare_at_cap`: the "cap_" metrics); its KL to SFT is measured on its own replies, and the fine-tuned
    policy is saved under checkpoints/<profile>/policy_<name>/ (except at the smoke profile).
    The record's wall time is the training time (the sum of the iterations') plus this evaluation.
    `others_cpu_share` (`machine.PeakMemory`): how much of the CPU other processes took while it trained.
    Returns the record (also written to results/<profile>/<name>.json).
    """
    clock = machine.Timer()
    gen = evaluate.generate_for_eval(policy, setup.tokenizer, setup.eval_prompts, cfg)
    gen["rewards"] = np.asarray(setup.scorer(setup.eval_prompts, gen["texts"]))
    metrics = evaluate.compare_policies(setup.sft["rewards"], gen["rewards"], setup.sft, gen)
    # the same draws cut back to the training cap: the evaluation a run judged at its training cap would give
    cut = evaluate.cut_replies(gen, cfg.max_new_tokens, setup.tokenizer)
    cut["rewards"] = np.asarray(setup.scorer(setup.eval_prompts, cut["texts"]))
    metrics.update(evaluate.compare_at_cap(setup.sft_at_cap["rewards"], cut["rewards"], setup.sft_at_cap, cut))
    metrics["eval_budget"] = gen["budget"]
    metrics["kl_to_sft"] = evaluate.kl_to_reference(policy, ref, setup.tokenizer, setup.eval_prompts, gen["tokens"], cfg)
    metrics.update(reinforce_loop.summarize_history(history))
    metrics.update({"peak_memory_train_mb": peak_memory_train_mb, "others_cpu_share_train": others_cpu_share,
                    "train_prompts": len(setup.train_prompts),
                    "processes": machine.process_state().num_processes})
    if profile.name != "smoke":  # the fine-tuned policy, for later use (git-ignored, ~0.5 GB)
        policy.save_pretrained(records.checkpoints_dir(profile.name) / f"policy_{name}")
    # per prompt: gains split by length and by ended vs cut off, at the evaluation's budget and at the training cap
    samples = [{"prompt": p[-1]["content"], "messages": p, "sft": s, "rl": r, "reward_sft": float(a),
                "reward_rl": float(b), "length_sft": len(ts), "length_rl": len(tr), "ended_sft": bool(es),
                "ended_rl": bool(er), "reward_sft_at_cap": float(ca), "reward_rl_at_cap": float(cb),
                "ended_sft_at_cap": bool(ces), "ended_rl_at_cap": bool(cer)}
               for p, s, r, a, b, ts, tr, es, er, ca, cb, ces, cer in zip(
                   setup.eval_prompts, setup.sft["texts"], gen["texts"], setup.sft["rewards"], gen["rewards"],
                   setup.sft["tokens"], gen["tokens"], setup.sft["ended"], gen["ended"], setup.sft_at_cap["rewards"],
                   cut["rewards"], setup.sft_at_cap["ended"], cut["ended"])]
    records.write_record(
        name, profile.name, model_source=models.source_of(policy), data_source=setup.data_source, seed=cfg.seed,
        wall_time_s=sum(history["time/step"]) + clock.elapsed, amp=cfg.amp, metrics=metrics, curve=history,
        config={"reinforce": asdict(cfg), "reward_model": setup.reward_model, **(extra_config or {})}, samples=samples,
        reward_model_sha256=records.adapter_digest(setup.reward_model), reward_model_trained_on=setup.reward_model_trained_on,
        reward_model_mismatch=setup.reward_model_mismatch)
    return records.read_record(name, profile.name)


def trained_on(record: dict) -> str:
    """The name of the reward model a REINFORCE run optimised (e.g. "rm_scalar"), from its record."""
    try:
        return Path(record["config"]["reward_model"]).name
    except KeyError:
        raise ValueError(f"run record {record.get('name')!r} does not name its reward model "
                         "(config.reward_model); re-run its notebook") from None
