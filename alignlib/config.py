"""Run profiles: every hyperparameter of both levels, in one place.

Three profiles share one typed structure:

- ``full``  the original experiments exactly (GPU; Colab T4 or better).
- ``cpu``   real model, real data, sized for a 2-core CPU; every committed number comes from it.
- ``smoke`` a few steps on a few examples; proves the code path only (CI, nbval).

``get_profile()`` reads ``ALIGNLIB_PROFILE``; without it, ``full`` when CUDA is available,
else ``cpu``. Every profile fine-tunes SmolLM2-135M-Instruct; ``ALIGNLIB_MODEL`` names another
SFT model of the hub instead (e.g. HuggingFaceTB/SmolLM2-360M-Instruct or -1.7B-Instruct; only
135M has offline weights).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from .precision import resolve_amp  # noqa: F401  (public here: the hardware's choice of precision)

PROFILE_ENV = "ALIGNLIB_PROFILE"
MODEL_ENV = "ALIGNLIB_MODEL"
SMOLLM2_135M = "HuggingFaceTB/SmolLM2-135M-Instruct"

# Fixed across profiles, so not part of a record's settings
EVAL_SEED = 1234  # sampling seed of every held-out evaluation (the same replies for every policy of a profile)
RM_CHECKPOINT_EVERY = 50  # optimizer steps between reward-model checkpoints
REINFORCE_CHECKPOINT_EVERY = 20  # iterations between policy checkpoints
RELOAD_CHECK_PAIRS = 32  # pairs a saved reward model re-scores to prove that it reloads (all of them took minutes)


def iteration_seed(seed: int, iteration: int) -> int:
    """The sampling seed of one REINFORCE iteration: a separate stream per (run seed, iteration)."""
    return seed * 100_003 + iteration


@dataclass(frozen=True)
class DataConfig:
    max_length: int = 512  # tokens of prompt + response seen by the RM (left-truncated)
    n_validation: int = 373  # offline split size = HelpSteer2's validation split
    split_seed: int = 0
    max_train_pairs: int | None = None  # None: every training pair
    max_validation_pairs: int | None = None  # None: every validation pair
    # pairs carved from the training split (whole prompts) to tune on, never trained on by the
    # notebooks' runs and never the validation pairs: PreferenceData.development (0: none)
    n_development: int = 0


@dataclass(frozen=True)
class RewardModelConfig:
    num_labels: int = 1  # 1: scalar RM; 10: probabilistic RM over scores 1..10
    loss: str = "bradley_terry"  # or "expected_score" / "prob_beats" for num_labels > 1
    epochs: int = 1
    lr: float = 5e-5
    batch_size: int = 8  # preference pairs per optimizer step (before accumulation)
    grad_accum: int = 1
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    margin: float = 0.0  # Bradley-Terry margin (0 = the original loss)
    center_coef: float = 0.0  # reward-centering weight c * mean((s_c + s_r)^2); 0 = original
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # PEFT's default for Llama
    # Precision (alignlib/precision.py): "none" (float32), "fp16" (autocast + loss scaling), "bf16"
    # (autocast) or "auto" (chosen by the hardware: resolve_amp); $ALIGNLIB_AMP overrides it.
    amp: str = "none"
    eval_batch_size: int = 16
    seed: int = 0
    max_steps: int | None = None  # cap on optimizer steps (None: the whole epochs)


@dataclass(frozen=True)
class ReinforceConfig:
    iterations: int = 300
    prompts_per_iter: int = 16
    samples_per_prompt: int = 1  # k; RLOO needs k >= 2
    baseline: str = "ema"  # "ema", "rloo" or "none" (A = r: REINFORCE without a baseline)
    ema_alpha: float = 0.9
    max_new_tokens: int = 128
    top_p: float = 0.9
    temperature: float = 1.0
    lr: float = 1e-5
    max_grad_norm: float = 1.0
    kl_beta: float = 0.0  # 0 reproduces the original (no KL penalty)
    kl_log_every: int = 10  # with kl_beta = 0, measure the KL to SFT every n iterations (costs a forward)
    truncation_penalty: float = 0.0  # subtracted when a reply hits max_new_tokens with no end-of-turn
    max_prompt_tokens: int = 256
    amp: str = "none"  # precision of sampling and the policy step (see RewardModelConfig.amp)
    eval_prompts: int = 512
    eval_batch_size: int = 32
    # new tokens each held-out reply may take (None: max_new_tokens, the training cap). Larger, so that the
    # replies end and the reward model never judges text cut at the cap; the record also gives the gain with the
    # replies cut back to the training cap (the same draws: `evaluate.cut_replies`)
    eval_max_new_tokens: int | None = None
    seed: int = 0

    @property
    def eval_budget(self) -> int:
        """New tokens each held-out reply may take (`eval_max_new_tokens`, else the training cap)."""
        return self.eval_max_new_tokens or self.max_new_tokens


@dataclass(frozen=True)
class StudyConfig:
    """The scale of the studies (`alignlib.studies`), which repeat or extend the notebooks' runs."""
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds of `make seeds` (seed 0 is the notebooks' own run)
    overopt_iterations: int = 600  # `make overoptimization`: iterations against the proxy reward model
    overopt_every: int = 50  # ... judged every n iterations


@dataclass(frozen=True)
class Profile:
    name: str
    data: DataConfig
    rm_scalar: RewardModelConfig
    rm_prob: RewardModelConfig
    reinforce: ReinforceConfig
    studies: StudyConfig = StudyConfig()
    model: str = SMOLLM2_135M  # the SFT model's hub id ($ALIGNLIB_MODEL overrides it: `model_id`)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The held-out evaluation's reply budget (full and cpu): the SFT model's replies to the held-out prompts, sampled
# with room to end (`python -m alignlib sft-lengths`, results/cpu/sft_reply_lengths.json), close their turn within it
# in the share the record gives; the training cap (96 at cpu) cuts more than half of them.
EVAL_REPLY_BUDGET = 1024

FULL = Profile(
    name="full",
    data=DataConfig(),
    rm_scalar=RewardModelConfig(),
    rm_prob=RewardModelConfig(num_labels=10, loss="expected_score", epochs=3, amp="fp16"),
    reinforce=ReinforceConfig(eval_max_new_tokens=EVAL_REPLY_BUDGET),
)

# Sized for 2 CPU cores. What differs from `full` is the amount of work (pairs, steps,
# prompts), where the budget needs it the learning rate (the notebooks show the effect), and the
# precision: "auto" takes bf16 only on a CPU that multiplies bf16 faster than float32.
CPU = Profile(
    name="cpu",
    data=DataConfig(max_length=384, max_train_pairs=1800, n_development=400),
    rm_scalar=RewardModelConfig(lr=2e-4, warmup_steps=10, amp="auto"),
    rm_prob=RewardModelConfig(
        num_labels=10, loss="expected_score", lr=2e-4, warmup_steps=10, amp="auto"
    ),
    reinforce=ReinforceConfig(
        iterations=60, prompts_per_iter=8, max_new_tokens=96, lr=2e-5, eval_prompts=128, amp="auto",
        eval_max_new_tokens=EVAL_REPLY_BUDGET
    ),
    studies=StudyConfig(overopt_iterations=200, overopt_every=20),
)

SMOKE = Profile(
    name="smoke",
    data=DataConfig(max_length=64, max_train_pairs=16, max_validation_pairs=8, n_development=4),
    rm_scalar=RewardModelConfig(lr=1e-4, batch_size=4, max_steps=1, eval_batch_size=8, amp="auto"),
    rm_prob=RewardModelConfig(
        num_labels=10, loss="expected_score", lr=1e-4, batch_size=4, max_steps=1, eval_batch_size=8, amp="auto"
    ),
    reinforce=ReinforceConfig(
        iterations=1, prompts_per_iter=2, max_new_tokens=8, max_prompt_tokens=64, eval_prompts=4,
        eval_batch_size=4, amp="auto"
    ),
    studies=StudyConfig(overopt_iterations=2, overopt_every=1),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (FULL, CPU, SMOKE)}


class UnknownProfileError(ValueError):
    pass


def default_profile_name() -> str:
    return "full" if torch.cuda.is_available() else "cpu"


def model_id() -> str:
    """The SFT model's hub id: ``$ALIGNLIB_MODEL``, else SmolLM2-135M-Instruct (every profile's)."""
    return os.environ.get(MODEL_ENV, "").strip() or SMOLLM2_135M


def get_profile(name: str | None = None) -> Profile:
    """The profile called `name`, else ``$ALIGNLIB_PROFILE``, else the hardware default
    (with ``$ALIGNLIB_MODEL``, if set, as its model)."""
    name = name or os.environ.get(PROFILE_ENV) or default_profile_name()
    try:
        return dataclasses.replace(PROFILES[name.strip().lower()], model=model_id())
    except KeyError:
        valid = ", ".join(sorted(PROFILES))
        raise UnknownProfileError(
            f"Unknown run profile {name!r}. Valid profiles: {valid}. "
            f"Set {PROFILE_ENV} to one of them (e.g. {PROFILE_ENV}=cpu)."
        ) from None


def scoring_length(profile: Profile) -> int:
    """Tokens a reward model reads when it scores the profile's replies: the longest prompt, the longest reply
    (training or held-out) and the chat template's tokens, and at least the length it was trained at."""
    cfg = profile.reinforce
    return max(profile.data.max_length, cfg.max_prompt_tokens + max(cfg.max_new_tokens, cfg.eval_budget) + 32)


def with_overrides(cfg, **changes):
    """A copy of a config dataclass with some fields changed (e.g. a variant run)."""
    return dataclasses.replace(cfg, **changes)


# ------------------------------------------------------------------ the REINFORCE variants the course compares

KL_BETA = 0.05  # the KL weight of the "+ KL" runs (notebook 03 and the studies that repeat them)
# notebook 03's runs that `make overoptimization` repeats against a proxy reward model, unpenalised first
OVEROPT_POLICIES = ("reinforce_ema", "reinforce_ema_kl")


def rloo(cfg: ReinforceConfig, k: int = 2) -> ReinforceConfig:
    """RLOO with k replies per prompt and 1/k of the prompts per iteration: as many replies per iteration as the
    EMA run, so the two compare at equal sampling cost."""
    return with_overrides(cfg, baseline="rloo", samples_per_prompt=k, prompts_per_iter=cfg.prompts_per_iter // k)


def without_baseline(cfg: ReinforceConfig) -> ReinforceConfig:
    """The same run with no baseline: each reply's advantage is its reward (the estimator a baseline improves on)."""
    return with_overrides(cfg, baseline="none")


def with_kl(cfg: ReinforceConfig, beta: float = KL_BETA) -> ReinforceConfig:
    """The same run with a KL penalty of weight `beta` to the SFT model in the reward."""
    return with_overrides(cfg, kl_beta=beta)


# ------------------------------------------------------------------ the reward model ablation's variants

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
