"""Runs: seed, train, evaluate, save and write the run record, the same way for every variant.

This is the one module that seeds runs and writes training records (`results.write_record`):
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

from . import evaluate, models, precision, results, reinforce_loop, reward_model_loop, scoring, stats
from .data import PreferencePair
from .rollout import encode_prompts

SKY = [{"role": "user", "content": "Why is the sky blue?"}]  # the original write-up's example prompt
REUSE_ENV = "ALIGNLIB_REUSE_RUNS"


def adapter_digest(adapter: Path | str) -> str | None:
    """sha256 of a saved reward model's weights (adapter and head: adapter_model.safetensors), or None
    without them: which reward model a policy was trained against, beyond its folder's name."""
    weights = results.resolve(adapter) / "adapter_model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.exists() else None


def reusable_record(name: str, profile_name: str, settings: dict, amp: str, inputs: dict | None = None) -> dict | None:
    """The record of run `name` to take instead of training it again, or None (train).

    Only with ``$ALIGNLIB_REUSE_RUNS=1`` (`make report REUSE=1`): an execution of the notebooks that stopped
    (a session that ended, a lost Colab) continues without training again the runs it finished. A record
    counts only when this code made it (the same `code_version`, with no uncommitted changes), with these
    settings (its "config"), in the precision this machine resolves `amp` to, from the same `inputs` (record
    fields, e.g. the digest of the reward model it optimised, which a later run may have replaced): training
    again would repeat it up to float rounding. Without the variable every run trains, as a reader stepping
    through expects.
    """
    if os.environ.get(REUSE_ENV, "").strip().lower() not in ("1", "true", "yes") or \
            models.process_state().num_processes > 1:  # one process: under the launcher every run trains
        return None
    path = results.record_path(name, profile_name)
    version = results.loaded_code_version()
    if not path.exists() or version == "unknown" or version.endswith("+dirty"):
        return None
    record = json.loads(path.read_text())
    same = (record.get("code_version") == version and results.same_settings(record["config"], settings)
            and record.get("precision") == precision.resolve(amp, models.device()).amp
            and all(record.get(k) == v for k, v in (inputs or {}).items()))
    if same:
        print(f"[alignlib] {name}: reusing {results.portable(path)} (${REUSE_ENV}): made {record['created']} "
              f"by this code ({version}) with these settings, in {record['precision']}")
    return record if same else None


def unique_prompts(pairs: list[PreferencePair], tokenizer, max_prompt_tokens: int) -> tuple[list, int]:
    """Distinct prompts of `pairs` (in order of first appearance) that fit the prompt budget; returns
    (prompts, n_skipped_too_long)."""
    distinct = list({p.prompt_key: list(p.prompt) for p in pairs}.values())
    fits = [len(ids) <= max_prompt_tokens for ids in encode_prompts(tokenizer, distinct)]
    return [p for p, ok in zip(distinct, fits) if ok], fits.count(False)


def evaluation_prompts(validation: list[PreferencePair], tokenizer, cfg) -> list:
    """The held-out prompts every policy is judged on: "Why is the sky blue?" and then the first
    distinct validation prompts that fit the prompt budget, `cfg.eval_prompts` in all."""
    val_prompts, _ = unique_prompts(validation, tokenizer, cfg.max_prompt_tokens)
    return [SKY] + val_prompts[: cfg.eval_prompts - 1]


def rm_adapter_dir(profile: str, name: str = "rm_scalar") -> Path:
    """The reward model `name` of this profile: the one notebook 02/04 trained on this machine (in the output
    root, `results.output_root`), else the one this profile published (results/<profile>/adapters/, e.g. the
    full profile's, trained on a GPU), else the published cpu one. A run records which one it used (its
    config's "reward_model"); `models.load_reward_model` refuses one trained on another model or data source."""
    candidates = (results.checkpoints_dir(profile) / name, results.resolve(f"results/{profile}/adapters/{name}"))
    for adapter in candidates:
        if (adapter / "adapter_config.json").exists():
            return adapter
    return results.ROOT / "results" / "cpu" / "adapters" / name


def state_dir(profile, name: str) -> Path | None:
    """Where run `name` checkpoints its training state (delete it to start the run over).

    None at the smoke profile: no checkpoints. A smoke run is two steps, and the final checkpoint of a
    REINFORCE policy (weights and AdamW state, 1.6 GB) took a third of its time on a 2-core CPU; resuming
    is tested on tiny models instead (tests/test_resume.py, tests/test_distributed.py).
    """
    if profile.name == "smoke":
        return None
    return results.checkpoints_dir(profile.name) / f"{name}_state"


def tracker_project(profile, name: str) -> str:
    """The name a run logs under in the experiment tracker ($ALIGNLIB_TRACKER): "alignlib-cpu-reinforce_ema"."""
    return f"alignlib-{profile.name}-{name.replace('/', '-')}"


# ---------------------------------------------------------------------------------- reward models

RLHF = [{"role": "user", "content": "What is RLHF?"}]
RLHF_DEFINITION = ("RLHF, reinforcement learning from human feedback, fine-tunes a language model with reinforcement "
                   "learning: people compare pairs of model replies, a reward model is trained to predict their "
                   "preferences, and the model is then optimised to produce replies that the reward model scores highly.")


def sanity_checks(scorer: scoring.RewardScorer, pair: PreferencePair) -> list[dict]:
    """The original write-up's checks: a training pair's chosen and rejected reply, and a real
    definition of RLHF against a non-answer, each with the reward the model gives it."""
    rows = [(pair.prompt, pair.chosen, "training pair: chosen"), (pair.prompt, pair.rejected, "training pair: rejected"),
            (RLHF, RLHF_DEFINITION, "real definition"), (RLHF, "I don't know.", "non-answer")]
    rewards = scorer.score([list(p) for p, _, _ in rows], [r for _, r, _ in rows]).tolist()
    return [{"prompt (last turn)": p[-1]["content"], "reply": r, "label": label, "reward": w}
            for (p, r, label), w in zip(rows, rewards)]


def pairs_seen(history: dict, n_pairs: int, cfg, processes: int = 1) -> int:
    """Preference pairs a reward-model run trained on, every epoch counted: n_pairs per epoch, unless
    `max_steps` stopped it first (each step takes batch_size * grad_accum pairs from each process). The
    loop's last incomplete step, if any, is dropped, so this over-counts by less than one step's pairs."""
    return min(n_pairs * cfg.epochs, len(history["step"]) * cfg.batch_size * cfg.grad_accum * processes)


def training_speed(model, history: dict, n_pairs: int, train_s: float, amp: str) -> dict:
    """Tokens and pairs per second of a reward-model run (`n_pairs`: the pairs it trained on, every epoch
    counted; `train_s`: its training seconds), and the share of the device's measured matrix-product peak
    (in the precision the run resolved to) that the model's FLOPs reached."""
    dev = models.device()
    dtype = precision.resolve(amp, dev).dtype
    peak = results.matmul_gflops(dtype, device=dev)
    tokens_per_s = sum(history["train/tokens"]) / train_s
    achieved = tokens_per_s * models.train_flops_per_token(model) / 1e9
    return {"train_tokens_per_s": tokens_per_s, "train_pairs_per_s": n_pairs / train_s, "train_wall_time_s": train_s,
            "train_model_gflops": achieved, f"matmul_gflops_{str(dtype).split('.')[-1]}": peak,
            "matmul_fraction": achieved / peak}


def validation_metrics(model, tokenizer, pairs, max_length: int, cfg) -> tuple[dict, dict]:
    """Pairwise metrics of a reward model on the validation pairs, with the length analysis and,
    for a distributional head, how it uses its scores; returns (metrics, `scoring.pair_rewards` output)."""
    val = scoring.pair_rewards(model, tokenizer, pairs, max_length, cfg.eval_batch_size, cfg.amp, progress=True)
    metrics = stats.pairwise_metrics(val["chosen"], val["rejected"])
    metrics.update(stats.length_analysis(val["len_chosen"], val["len_rejected"], val["chosen"], val["rejected"]))
    metrics["n_truncated_val"] = int(val["truncated"].sum())
    if cfg.num_labels > 1:
        dist = stats.distribution_report(val["logits_chosen"], val["logits_rejected"])
        metrics.update({f"dist_{k}": v for k, v in dist.items()})
    return metrics, val


RELOAD_CHECK_PAIRS = 32  # pairs scored by the trained and the reloaded model (all of them took minutes on a CPU)


def save_and_check(model, name: str, profile, cfg, tokenizer, pairs, publish: bool,
                   data_source: str | None = None) -> tuple[Path, float]:
    """Save the adapter under checkpoints/<profile>/<name>/ (and with `publish`, except at the smoke
    profile, under results/<profile>/adapters/<name>/), reload it as a user would, with plain PEFT,
    and check that it gives the trained model's rewards on the first RELOAD_CHECK_PAIRS `pairs`
    (same batches for both); returns (adapter, the largest reward difference). `data_source` (the training
    pairs' source) is saved with it."""
    max_length = profile.data.max_length
    adapter = results.checkpoints_dir(profile.name) / name
    models.save_reward_model(model, adapter, max_length, data_source)
    if publish and profile.name != "smoke":
        adapter = results.results_dir(profile.name) / "adapters" / name
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
    reused = reusable_record(name, profile.name, settings, cfg.amp)
    if reused is not None and (results.resolve(reused["adapter"]) / "adapter_config.json").exists():
        return reused_reward_model(reused, profile, cfg, tokenizer, prefs)
    results.seed_everything(cfg.seed)
    clock, max_length, processes = results.Timer(), profile.data.max_length, models.process_state()
    model = models.new_reward_model(cfg)
    before = None
    if evaluate_before and processes.is_main_process:
        before = validation_metrics(model, tokenizer, prefs.validation, max_length, cfg)[0]
    with results.PeakMemory() as mem, results.Timer() as train_time:
        history = reward_model_loop.train_reward_model(model, tokenizer, prefs.train, cfg, max_length,
                                                       checkpoint_dir=state_dir(profile, name),
                                                       run_name=tracker_project(profile, name))
    if not processes.is_main_process:
        return None, model, None
    metrics, val = validation_metrics(model, tokenizer, prefs.validation, max_length, cfg)
    # the training time is every step's, also the steps before a resume (this process's timer saw only its own)
    train_s = sum(history["time/step"])
    metrics.update(training_speed(model, history, pairs_seen(history, len(prefs.train), cfg, processes.num_processes),
                                  train_s, cfg.amp))
    metrics.update({"train_pairs": len(prefs.train), "peak_memory_train_mb": mem.peak_mb,
                    "skipped_steps": precision.skipped_steps(history["optim/grad_norm"]),
                    "processes": processes.num_processes,
                    "pairs_per_step": cfg.batch_size * cfg.grad_accum * processes.num_processes})
    if before is not None:
        metrics.update({"val_accuracy_before": before["val_accuracy"], "val_loss_before": before["val_loss"]})
    adapter, metrics["reload_max_abs_diff"] = save_and_check(model, name, profile, cfg, tokenizer, prefs.validation,
                                                             publish, prefs.source)
    metrics["reload_pairs"] = min(RELOAD_CHECK_PAIRS, len(prefs.validation))
    scorer = scoring.RewardScorer(model, tokenizer, max_length, cfg.eval_batch_size, cfg.amp)
    results.write_record(
        name, profile.name, model_source=models.source_of(model), data_source=prefs.source, seed=cfg.seed,
        wall_time_s=clock.elapsed - train_time.seconds + train_s,
        config=settings, metrics=metrics, amp=cfg.amp, curve=history, adapter=results.portable(adapter),
        before_training=before, sanity_checks=sanity_checks(scorer, prefs.train[0]),
        margins=val["chosen"] - val["rejected"])
    return results.read_record(name, profile.name), model, val


def reused_reward_model(record: dict, profile, cfg, tokenizer, prefs) -> tuple[dict, object, dict]:
    """`reward_model_run`'s return for a run it does not train again (`reusable_record`): the record, the
    saved adapter loaded (trainable weights as in training), and the validation pairs scored again, which
    must give the record's margins: a check that the adapter is the one the record describes."""
    model = models.load_reward_model(results.resolve(record["adapter"]), cfg.num_labels, trainable=True).eval()
    metrics, val = validation_metrics(model, tokenizer, prefs.validation, profile.data.max_length, cfg)
    diff = float(np.abs((val["chosen"] - val["rejected"]) - np.asarray(record["margins"])).max())
    if not (metrics["val_accuracy"] == record["metrics"]["val_accuracy"] and diff <= 1e-3):
        raise RuntimeError(f"the adapter {record['adapter']} does not reproduce its record's validation margins "
                           f"(largest difference {diff:.3g}, accuracy {metrics['val_accuracy']:.4f} against "
                           f"{record['metrics']['val_accuracy']:.4f}): delete results/{profile.name}/{record['name']}.json "
                           "to train it again")
    print(f"[alignlib] {record['name']}: validation pairs scored again: accuracy {metrics['val_accuracy']:.4f} as "
          f"recorded (largest margin difference {diff:.1e})")
    return record, model, val


# ------------------------------------------------------------------------------------- REINFORCE


@dataclass
class ReinforceSetup:
    """What the REINFORCE runs of a notebook share: prompts, the reward model, and the SFT baseline.

    `scorer` (prompts, texts) -> (n,) rewards is the reward model's score: the training reward
    unless a run passes its own, and always the judge on the held-out `eval_prompts`. `sft` holds
    the SFT policy's replies to them and their rewards (`evaluate.generate_for_eval` + "rewards").
    """
    tokenizer: object
    scorer: Callable
    train_prompts: list
    train_prompts_skipped: int  # distinct training prompts over the prompt budget, left out
    eval_prompts: list
    sft: dict
    reward_model: str  # the RM's adapter, as `results.portable` writes it (recorded as config["reward_model"])
    data_source: str
    # the sources the RM was trained on ({"model_source", "data_source"}), and how they differ from this run's
    # (`models.source_mismatches`; empty unless $ALIGNLIB_ALLOW_RM_MISMATCH let a mismatched RM load)
    reward_model_trained_on: dict = field(default_factory=dict)
    reward_model_mismatch: dict = field(default_factory=dict)


def reinforce_setup(profile, tokenizer, scorer, reward_model: Path | str, prefs) -> ReinforceSetup:
    """Training prompts (the distinct training prompts within the prompt budget), the evaluation
    prompts (`evaluation_prompts`), and the SFT policy's replies to them, scored by `scorer`.
    `reward_model` is the adapter `scorer` uses (absolute, or relative to the repository)."""
    cfg = profile.reinforce
    train_prompts, skipped = unique_prompts(prefs.train, tokenizer, cfg.max_prompt_tokens)
    eval_prompts = evaluation_prompts(prefs.validation, tokenizer, cfg)
    policy = models.load_policy()
    sft = evaluate.generate_for_eval(policy, tokenizer, eval_prompts, cfg)
    sft["rewards"] = np.asarray(scorer(eval_prompts, sft["texts"]))
    reward_model = results.resolve(reward_model)
    notes = models.reward_model_notes(reward_model)
    trained_on = {k: notes.get(k) for k in ("model_source", "data_source")}
    return ReinforceSetup(tokenizer, scorer, train_prompts, skipped, eval_prompts, sft,
                          results.portable(reward_model), prefs.source, trained_on,
                          models.source_mismatches(notes, models.source_of(policy), prefs.source))


def reinforce_run(name: str, profile, cfg, setup: ReinforceSetup, reward_fn: Callable | None = None,
                  extra_config: dict | None = None) -> dict:
    """Seed, train a fresh copy of the SFT policy with REINFORCE (reward `reward_fn`, default the
    setup's scorer), then `record_reinforce_run`. Training state is checkpointed under
    `state_dir(profile, name)`: re-running after an interruption continues where it stopped.
    Returns the record (None in the processes other than the main one under `accelerate launch`).
    With ``$ALIGNLIB_REUSE_RUNS=1``, a run this code already recorded with the same settings is not trained
    again (`reusable_record`)."""
    settings = {"reinforce": asdict(cfg), "reward_model": setup.reward_model, **(extra_config or {})}
    reused = reusable_record(name, profile.name, settings, cfg.amp,
                             {"reward_model_sha256": adapter_digest(setup.reward_model)})
    if reused is not None:
        return reused
    results.seed_everything(cfg.seed)
    policy, ref = models.load_policy(), models.load_policy()
    with results.PeakMemory() as mem:
        history = reinforce_loop.train_reinforce(policy, setup.tokenizer, reward_fn or setup.scorer,
                                                 setup.train_prompts, cfg, ref_policy=ref,
                                                 checkpoint_dir=state_dir(profile, name),
                                                 run_name=tracker_project(profile, name))
    if not models.process_state().is_main_process:
        return None
    return record_reinforce_run(name, profile, cfg, setup, policy, ref, history, mem.peak_mb, extra_config)


def record_reinforce_run(name: str, profile, cfg, setup: ReinforceSetup, policy, ref, history: dict,
                         peak_memory_train_mb: float, extra_config: dict | None = None) -> dict:
    """Judge a trained policy against SFT on the held-out prompts, and write its run record.

    The policy's replies are scored by `setup.scorer` and compared pairwise with SFT's
    (`evaluate.compare_policies`), its KL to SFT is measured on its own replies, and the fine-tuned
    policy is saved under checkpoints/<profile>/policy_<name>/ (except at the smoke profile).
    The record's wall time is the training time (the sum of the iterations') plus this evaluation.
    Returns the record (also written to results/<profile>/<name>.json).
    """
    clock = results.Timer()
    gen = evaluate.generate_for_eval(policy, setup.tokenizer, setup.eval_prompts, cfg)
    gen["rewards"] = np.asarray(setup.scorer(setup.eval_prompts, gen["texts"]))
    metrics = evaluate.compare_policies(setup.sft["rewards"], gen["rewards"], setup.sft, gen)
    metrics["kl_to_sft"] = evaluate.kl_to_reference(policy, ref, setup.tokenizer, setup.eval_prompts, gen["tokens"], cfg)
    metrics.update(reinforce_loop.summarize_history(history))
    metrics.update({"peak_memory_train_mb": peak_memory_train_mb, "train_prompts": len(setup.train_prompts),
                    "processes": models.process_state().num_processes})
    if profile.name != "smoke":  # the fine-tuned policy, for later use (git-ignored, ~0.5 GB)
        policy.save_pretrained(results.checkpoints_dir(profile.name) / f"policy_{name}")
    samples = [{"prompt": p[-1]["content"], "messages": p, "sft": s, "rl": r, "reward_sft": float(a),
                "reward_rl": float(b), "length_sft": len(ts), "length_rl": len(tr), "ended_sft": bool(es),
                "ended_rl": bool(er)}  # per prompt: gains split by length and by ended vs cut off at the cap
               for p, s, r, a, b, ts, tr, es, er in zip(setup.eval_prompts, setup.sft["texts"], gen["texts"],
                                                        setup.sft["rewards"], gen["rewards"], setup.sft["tokens"],
                                                        gen["tokens"], setup.sft["ended"], gen["ended"])]
    results.write_record(
        name, profile.name, model_source=models.source_of(policy), data_source=setup.data_source, seed=cfg.seed,
        wall_time_s=sum(history["time/step"]) + clock.elapsed, amp=cfg.amp, metrics=metrics, curve=history,
        config={"reinforce": asdict(cfg), "reward_model": setup.reward_model, **(extra_config or {})}, samples=samples,
        reward_model_sha256=adapter_digest(setup.reward_model), reward_model_trained_on=setup.reward_model_trained_on,
        reward_model_mismatch=setup.reward_model_mismatch)
    return results.read_record(name, profile.name)


def trained_on(record: dict) -> str:
    """The name of the reward model a REINFORCE run optimised (e.g. "rm_scalar"), from its record."""
    try:
        return Path(record["config"]["reward_model"]).name
    except KeyError:
        raise ValueError(f"run record {record.get('name')!r} does not name its reward model "
                         "(config.reward_model); re-run its notebook") from None
