"""Check a CUDA GPU in one command (``make gpu-check``), in at most about 8 minutes, T4 to H100.

    python -m alignlib gpu-check                  # on a CUDA GPU -> results/full/gpu_check.json
    python -m alignlib gpu-check --out my.json    # the record elsewhere
    python -m alignlib gpu-check --dry-run        # the same code path on this machine, tiny (for tests)

Three parts, in order, each with its time and peak memory:

1. the unit tests that apply on CUDA (a pytest subprocess, ``-x -q``);
2. 50 optimizer steps of the probabilistic reward model of the ``full`` profile (`rm_prob`) in fp16 with loss
   scaling, on the real preference data: its pairs per second and the steps the loss scaler skipped;
3. 20 iterations of REINFORCE at the ``full`` profile's settings (16 prompts, 128 new tokens; on CUDA the
   static KV cache, whose decoding step is compiled during the first iteration) against the scalar reward
   model published in results/full/adapters/rm_scalar (a freshly initialised one if it does not load; the
   record says which): the first iteration (compilation included), the seconds per later iteration, and
   their split into generate / score / backward.

A part that fails is recorded with its error and the next part still runs; a part that would not end
within the time budget is skipped with a note. The exit status is 0 only when every part ran and every
test passed; 1 otherwise; 2 without CUDA (unless ``--dry-run``).

``--dry-run`` runs every part's code on whatever device alignlib finds (the CPU on a machine without CUDA)
with tiny random models (SmolLM2's tokenizer and architecture, 2 layers of width 32) at the smoke profile's
sizes, one fast test file, and writes to a temporary file unless ``--out`` is given: fp16 is emulated on a
CPU, about 100 times slower than float32, so the real model in fp16 would take many minutes there.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import os
import subprocess
import sys
import tempfile
import traceback
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import torch

from . import config, data, machine, models, precision, prompts, records, reinforce_loop, reward_model_loop, rollout, scoring
from .hub import short_error

BUDGET_S = 480.0  # the whole check, in seconds
RECORD_NAME = "gpu_check"
# the unit tests that exercise the math, the loops, precision and sampling: what a GPU machine can get wrong
TEST_FILES = ("tests/test_precision.py", "tests/test_losses.py", "tests/test_logprobs.py", "tests/test_rollout.py",
              "tests/test_reinforce.py", "tests/test_loops.py", "tests/test_reward.py", "tests/test_baselines.py",
              "tests/test_full_profile.py", "tests/test_loop_parts.py")
DRY_RUN_TEST_FILES = ("tests/test_baselines.py",)  # pytest inside pytest is slow: one fast file proves the path
MIN_TEST_S = 30.0  # below this much time for the unit tests, they are skipped rather than cut off
PUBLISHED_SCALAR_RM = records.ROOT / "results" / "full" / "adapters" / "rm_scalar"
# the record's metrics, each present (null where its part did not run)
METRICS = ("gpu_name", "compute_capability", "cuda_version",
           "tests_passed", "tests_failed", "tests_errors", "tests_skipped", "tests_exit_code", "tests_timed_out",
           "tests_s",
           "rm_steps", "rm_skipped_steps", "rm_pairs_per_s", "rm_tokens_per_s", "rm_train_s", "rm_first_step_s",
           "rm_loss_first", "rm_loss_last", "rm_peak_memory_mb",
           "reinforce_iterations", "reinforce_first_iter_s", "reinforce_first_iter_generate_s",
           "reinforce_sec_per_iter", "reinforce_generate_s", "reinforce_score_s", "reinforce_backward_s",
           "reinforce_skipped_steps", "reinforce_reply_tokens_mean", "reinforce_peak_memory_mb", "total_s")


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much work each part does: the full check on a GPU, or the dry run's tiny version of it."""
    profile: config.Profile  # its data settings, and the scalar RM's (scoring batch size, a fresh scalar RM)
    rm: config.RewardModelConfig  # part 2
    reinforce: config.ReinforceConfig  # part 3
    test_files: tuple[str, ...]  # part 1
    # seconds a part needs, model loading included: it is skipped when fewer are left in the budget. Rough
    # estimates for a T4 (the slowest GPU meant), not measurements; a faster GPU needs a fraction
    estimates: dict
    tiny_models: bool


def full_scale() -> Scale:
    """The check on a GPU: the full profile's fp16 rm_prob for 50 steps, its REINFORCE for 20 iterations."""
    full = config.get_profile("full")
    return Scale(profile=full, rm=config.with_overrides(full.rm_prob, max_steps=50, amp="fp16"),
                 reinforce=config.with_overrides(full.reinforce, iterations=20), test_files=TEST_FILES,
                 estimates={"reward_model": 90.0, "reinforce": 210.0}, tiny_models=False)


def dry_run_scale() -> Scale:
    """The same parts at the smoke profile's sizes: 2 RM steps (still fp16), 2 REINFORCE iterations of 2
    prompts (in the full profile's precision), and one fast test file."""
    smoke, full = config.get_profile("smoke"), config.get_profile("full")
    return Scale(profile=smoke, rm=config.with_overrides(smoke.rm_prob, max_steps=2, amp="fp16"),
                 reinforce=config.with_overrides(smoke.reinforce, iterations=2, max_new_tokens=4,
                                                 amp=full.reinforce.amp),
                 test_files=DRY_RUN_TEST_FILES, estimates={"reward_model": 20.0, "reinforce": 20.0}, tiny_models=True)


# ------------------------------------------------------------------------------------------ command line


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m alignlib gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="without a GPU: every part tiny, on this machine's device (for tests)")
    parser.add_argument("--out", type=Path, help="where to write the record (default: results/full/gpu_check.json; "
                                                  "with --dry-run, a temporary file)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds the whole check may take (default {BUDGET_S:.0f}); parts that would not fit "
                             "are skipped")
    return parser.parse_args(argv)


def no_cuda_message() -> str:
    """What is wrong without CUDA, and what to do."""
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"alignlib.gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, {build}). This command checks a GPU. Run it on a machine with an NVIDIA GPU and a "
            "CUDA build of torch (on Colab: Runtime > Change runtime type > T4 GPU), and check that nvidia-smi lists "
            "the GPU. To run the check's code on this machine instead, tiny and without a GPU: "
            "python -m alignlib gpu-check --dry-run")


class Progress:
    """Prints what the check is doing, with the seconds since it started, as it goes (a remote GPU's user
    sees it work), and keeps the time budget."""

    def __init__(self, budget_s: float):
        self.clock, self.budget_s = machine.Timer(), budget_s

    @property
    def elapsed(self) -> float:
        return self.clock.elapsed

    @property
    def left(self) -> float:
        return self.budget_s - self.elapsed

    def say(self, message: str) -> None:
        print(f"[gpu-check {self.elapsed:6.1f} s] {message}", flush=True)


# ------------------------------------------------------------------------------------------ the models


class RealModels:
    """SmolLM2-135M-Instruct (hub or offline copy, `models.locate_model`): what the check measures."""

    def __init__(self, scale: Scale):
        self.scale = scale

    def reward_model(self, cfg):
        return models.new_reward_model(cfg)

    def scalar_reward_model(self, data_source: str) -> tuple[object, str]:
        """(model, which one): the published full-profile scalar RM, else a freshly initialised one."""
        try:
            model = models.load_reward_model(PUBLISHED_SCALAR_RM, data_source=data_source)
            return model, f"published adapter {records.portable(PUBLISHED_SCALAR_RM)}"
        except Exception as e:  # noqa: BLE001  (any failure to load: the check goes on, and says so)
            print(f"[gpu-check] WARNING: the published scalar reward model did not load ({short_error(e)}); "
                  "REINFORCE is timed against a freshly initialised scalar reward model instead", flush=True)
            return (models.new_reward_model(self.scale.profile.rm_scalar),
                    f"freshly initialised scalar RM (the published adapter did not load: {short_error(e)})")

    def policy(self):
        return models.load_policy()


class TinyModels:
    """Tiny random models of SmolLM2's vocabulary (the dry run): 2 layers of width 32, seeded."""

    def __init__(self, tokenizer):
        self.shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                          bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)

    def reward_model(self, cfg):
        from peft import get_peft_model
        from transformers import LlamaConfig, LlamaForSequenceClassification

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            base = LlamaForSequenceClassification(LlamaConfig(**self.shape, num_labels=cfg.num_labels))
            with models.peft_without_deprecation_noise():
                model = get_peft_model(base, models.lora_config(cfg))
        model.alignlib_source = "tiny-random"
        return model.to(machine.device())

    def scalar_reward_model(self, data_source: str) -> tuple[object, str]:
        return self.reward_model(config.get_profile("smoke").rm_scalar).eval(), "tiny random scalar RM (dry run)"

    def policy(self):
        from transformers import LlamaConfig, LlamaForCausalLM

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = LlamaForCausalLM(LlamaConfig(**self.shape))
        model.alignlib_source = "tiny-random"
        return model.to(machine.device()).eval()


class Inputs:
    """The tokenizer, the preference data and the models, loaded when a part first needs them."""

    def __init__(self, scale: Scale):
        self.scale = scale
        self.model_source = "not loaded"  # the weights the parts ran on (`models.source_of`), for the record

    @functools.cached_property
    def tokenizer(self):
        return models.load_tokenizer()

    @functools.cached_property
    def prefs(self) -> data.PreferenceData:
        """The profile's preference data, from the source the published scalar RM was trained on (so that it
        loads; the offline HH-RLHF pairs for the committed one: no download)."""
        trained_on = models.reward_model_notes(PUBLISHED_SCALAR_RM).get("data_source")
        return data.load_preference_data(self.scale.profile.data, source=data.source_setting(trained_on))

    @functools.cached_property
    def models(self):
        return TinyModels(self.tokenizer) if self.scale.tiny_models else RealModels(self.scale)

    @property
    def data_source(self) -> str:
        """The preference data's source, for the record ("not loaded" when no part needed it)."""
        return self.prefs.source if "prefs" in self.__dict__ else "not loaded"


def free_device_memory() -> None:
    """Give back what the last part's models held, so that the next part's peak is its own."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ 1. unit tests


def junit_counts(path: Path) -> dict:
    """{"tests_passed", "tests_failed", "tests_errors", "tests_skipped"} of a pytest --junitxml report."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    return {"tests_passed": total["tests"] - total["failures"] - total["errors"] - total["skipped"],
            "tests_failed": total["failures"], "tests_errors": total["errors"], "tests_skipped": total["skipped"]}


def run_unit_tests(files: tuple[str, ...], timeout_s: float, progress: Progress) -> dict:
    """Run the test files with pytest (``-x -q``) in a subprocess, its output shown as it goes; returns the
    counts (`junit_counts`), its exit code, its seconds and whether it was stopped at `timeout_s`."""
    progress.say(f"pytest -x -q {' '.join(files)} (at most {timeout_s:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                   *files]
        clock = machine.Timer()
        try:
            code, timed_out = subprocess.run(command, cwd=records.ROOT, timeout=timeout_s).returncode, False
        except subprocess.TimeoutExpired:
            code, timed_out = None, True
        counts = junit_counts(report) if report.exists() else {
            "tests_passed": None, "tests_failed": None, "tests_errors": None, "tests_skipped": None}
    return {**counts, "tests_exit_code": code, "tests_timed_out": timed_out, "tests_s": clock.elapsed}


# ------------------------------------------------------------------------------------------ 2. reward model


def check_reward_model(scale: Scale, inputs: Inputs, progress: Progress) -> dict:
    """Train the probabilistic RM for `scale.rm.max_steps` steps in fp16: pairs/s, skipped steps, peak memory.

    It trains on the first max_steps * batch_size * grad_accum training pairs, exactly the pairs the steps
    take (encoding all 5,803 would cost seconds of the budget and change nothing measured)."""
    cfg = scale.rm
    pairs = inputs.prefs.train[: cfg.max_steps * cfg.batch_size * cfg.grad_accum]
    machine.seed_everything(cfg.seed)
    model = inputs.models.reward_model(cfg)
    inputs.model_source = models.source_of(model)
    progress.say(f"reward model: {models.source_of(model)} weights loaded; training {cfg.max_steps} steps of "
                 f"{cfg.batch_size} pairs in {precision.resolve(cfg.amp, machine.device()).dtype}")
    try:
        with machine.PeakMemory() as memory:
            history = reward_model_loop.train_reward_model(model, inputs.tokenizer, pairs, cfg,
                                                           scale.profile.data.max_length)
    finally:
        del model
        free_device_memory()
    train_s, steps = sum(history["time/step"]), len(history["step"])
    return {"rm_steps": steps, "rm_skipped_steps": precision.skipped_steps(history["optim/grad_norm"]),
            "rm_pairs_per_s": steps * cfg.batch_size * cfg.grad_accum / train_s,
            "rm_tokens_per_s": sum(history["train/tokens"]) / train_s, "rm_train_s": train_s,
            "rm_first_step_s": history["time/step"][0], "rm_loss_first": history["train/loss"][0],
            "rm_loss_last": history["train/loss"][-1], "rm_peak_memory_mb": memory.peak_mb}


# ------------------------------------------------------------------------------------------ 3. REINFORCE


def check_reinforce(scale: Scale, inputs: Inputs, progress: Progress) -> tuple[dict, dict]:
    """REINFORCE for `scale.reinforce.iterations` iterations against the scalar RM, as `runs.reinforce_run`
    trains (a frozen copy of the SFT policy as the reference, whose KL is measured now and then); returns
    (metrics, what it ran against). The first iteration's time includes compiling the decoding step (static
    KV cache, on CUDA); the per-iteration times are the means over the later iterations."""
    cfg = scale.reinforce
    rm, described = inputs.models.scalar_reward_model(inputs.prefs.source)
    scorer = scoring.RewardScorer(rm, inputs.tokenizer, scale.profile.data.max_length,
                                  scale.profile.rm_scalar.eval_batch_size, cfg.amp)
    train_prompts, _ = prompts.unique_prompts(inputs.prefs.train, inputs.tokenizer, cfg.max_prompt_tokens)
    if len(train_prompts) < cfg.prompts_per_iter:
        raise ValueError(f"only {len(train_prompts)} training prompts fit max_prompt_tokens={cfg.max_prompt_tokens}; "
                         f"an iteration needs {cfg.prompts_per_iter}")
    machine.seed_everything(cfg.seed)
    policy, ref = inputs.models.policy(), inputs.models.policy()
    inputs.model_source = models.source_of(policy)
    against = {"reward_model": described, "reward_model_mismatch": getattr(rm, "alignlib_mismatch", {}),
               "kv_cache": rollout.kv_cache_for(next(policy.parameters()).device)}
    progress.say(f"REINFORCE: scoring with the {described}; {cfg.iterations} iterations of {cfg.prompts_per_iter} "
                 f"prompts x {cfg.max_new_tokens} new tokens, {against['kv_cache']} KV cache (on CUDA the first "
                 "iteration compiles the decoding step)")
    try:
        with machine.PeakMemory() as memory:
            history = reinforce_loop.train_reinforce(policy, inputs.tokenizer, scorer.score, train_prompts, cfg,
                                                     ref_policy=ref)
    finally:
        del policy, ref, rm, scorer
        free_device_memory()
    later = slice(1, None)  # the iterations after the first (which compiles)
    mean_later = lambda key: float(np.mean(history[key][later])) if len(history[key]) > 1 else None  # noqa: E731
    metrics = {"reinforce_iterations": len(history["step"]), "reinforce_first_iter_s": history["time/step"][0],
               "reinforce_first_iter_generate_s": history["time/generate"][0],
               "reinforce_sec_per_iter": mean_later("time/step"), "reinforce_generate_s": mean_later("time/generate"),
               "reinforce_score_s": mean_later("time/score"), "reinforce_backward_s": mean_later("time/backward"),
               "reinforce_skipped_steps": precision.skipped_steps(history["optim/grad_norm"]),
               "reinforce_reply_tokens_mean": float(np.mean(history["response/length"])),
               "reinforce_peak_memory_mb": memory.peak_mb}
    return metrics, against


# ------------------------------------------------------------------------------------------ the record


def gpu_identity() -> dict:
    """The GPU's name and compute capability ("8.9"), None without CUDA, and the CUDA torch was built for."""
    if not torch.cuda.is_available():
        return {"gpu_name": None, "compute_capability": None, "cuda_version": torch.version.cuda}
    major, minor = torch.cuda.get_device_capability(0)
    return {"gpu_name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}",
            "cuda_version": torch.version.cuda}


def write(out: Path | None, profile: str, **record) -> Path:
    """Write the record with `records.write_record` (its standard fields: hardware, precision, code version,
    ...): to results/<profile>/gpu_check.json, or to the file `out`."""
    return records.write_record(RECORD_NAME, profile, path=out and out.expanduser().resolve(), **record)


def settings(scale: Scale, args: argparse.Namespace) -> dict:
    """The record's config: what each part ran with."""
    return {"dry_run": args.dry_run, "budget_s": args.budget, "test_files": list(scale.test_files),
            "rm": dataclasses.asdict(scale.rm), "reinforce": dataclasses.asdict(scale.reinforce),
            "data": dataclasses.asdict(scale.profile.data), "part_estimates_s": scale.estimates}


# ------------------------------------------------------------------------------------------ the check


def run_part(name: str, estimate_s: float, progress: Progress, parts: dict, notes: list, work) -> object:
    """Run `work()` as part `name` unless fewer than `estimate_s` seconds of the budget are left (the seconds
    it needs, or for the unit tests the least they get plus what the later parts need); a failure is printed
    and recorded, and the check goes on. Returns what `work` returned, None if skipped or failed."""
    if progress.left < estimate_s:
        parts[name] = "skipped"
        notes.append(f"{name}: skipped after {progress.elapsed:.0f} s: {max(progress.left, 0):.0f} s of the "
                     f"{progress.budget_s:.0f} s budget were left, and starting it needs {estimate_s:.0f} s")
        progress.say(notes[-1])
        return None
    progress.say(f"== {name}")
    try:
        out = work()
    except Exception as e:  # noqa: BLE001  (recorded, and the next part still runs)
        traceback.print_exc()
        parts[name] = "error"
        notes.append(f"{name}: failed: {short_error(e, 500)}")
        progress.say(notes[-1])
        free_device_memory()
        return None
    parts[name] = "done"
    progress.say(f"{name}: done")
    return out


def main(argv=None) -> int:
    args = parse(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(no_cuda_message(), file=sys.stderr)
        return 2
    progress = Progress(args.budget)
    records.loaded_code_version()  # the code this check runs, pinned before it starts
    if os.environ.pop(precision.AMP_ENV, "").strip():
        progress.say(f"${precision.AMP_ENV} is ignored: the check runs each part in the precision it names")
    scale = dry_run_scale() if args.dry_run else full_scale()
    out = args.out
    if out is None and args.dry_run:  # never over the GPU's record
        out = Path(tempfile.gettempdir()) / "gpu_check_dry_run.json"
    gpu = gpu_identity()
    progress.say(f"{'DRY RUN (tiny models) on ' if args.dry_run else ''}{machine.hardware()}; budget "
                 f"{args.budget:.0f} s")
    inputs, parts, notes, metrics = Inputs(scale), {}, [], dict.fromkeys(METRICS) | gpu

    # 1. the unit tests, in the time the budget leaves after the estimates of the parts to come
    reserve = sum(scale.estimates.values())
    tested = run_part("unit_tests", MIN_TEST_S + reserve, progress, parts, notes,
                      lambda: run_unit_tests(scale.test_files, progress.left - reserve, progress))
    if tested is not None:
        metrics.update(tested)
        if tested["tests_timed_out"] or tested["tests_exit_code"] != 0:
            parts["unit_tests"] = "timed out" if tested["tests_timed_out"] else "failed"
            notes.append(f"unit_tests: {parts['unit_tests']} ({tested['tests_passed']} passed, "
                         f"{tested['tests_failed']} failed, {tested['tests_errors']} errors; pytest exit code "
                         f"{tested['tests_exit_code']})")
            progress.say(notes[-1])

    # 2. the probabilistic reward model in fp16
    metrics.update(run_part("reward_model", scale.estimates["reward_model"], progress, parts, notes,
                            lambda: check_reward_model(scale, inputs, progress)) or {})

    # 3. REINFORCE against the scalar reward model
    more, against = run_part("reinforce", scale.estimates["reinforce"], progress, parts, notes,
                             lambda: check_reinforce(scale, inputs, progress)) or ({}, {})
    metrics.update(more)

    metrics["total_s"] = progress.elapsed
    path = write(out, scale.profile.name, model_source=inputs.model_source, data_source=inputs.data_source, seed=0,
                 wall_time_s=progress.elapsed, amp=scale.rm.amp, metrics=metrics, config=settings(scale, args),
                 parts=parts, notes=notes, reinforce_against=against, part_precision={
                     "reward_model": precision.describe(scale.rm.amp, machine.device()),
                     "reinforce": precision.describe(scale.reinforce.amp, machine.device())})
    ok = all(status == "done" for status in parts.values())
    progress.say(f"{'PASSED' if ok else 'NOT PASSED'}: " + ", ".join(f"{k} {v}" for k, v in parts.items()))
    progress.say(f"record: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
