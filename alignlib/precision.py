"""Precision: which number format a run computes in, chosen by the hardware it finds.

Four settings (the `amp` field of every config, or ``$ALIGNLIB_AMP``, which overrides them all):

- ``"none"``: float32 everywhere.
- ``"bf16"``: bfloat16 autocast. bf16 keeps float32's exponent range, so gradients need no scaling.
- ``"fp16"``: float16 autocast with dynamic loss scaling (`torch.amp.GradScaler`). fp16's range is
  narrow: the loss is multiplied by a large scale before the backward pass so that small gradients
  do not flush to zero, and a step whose gradients overflow (inf/NaN) is skipped while the scale
  is halved. Skipped steps are how loss scaling works, not errors: they are counted.
- ``"auto"``: `resolve_amp` picks. On CUDA, bf16 where the GPU computes it natively (compute capability
  8.0 and up: A100, L4, H100), else fp16 (a T4, where bf16 would be emulated).
  On a CPU, bf16 only where a bf16 matrix product measures faster than a float32 one: CPUs with
  AMX or AVX512-BF16 multiply bf16 several times faster, while a CPU with only AVX2 emulates it
  about 100x slower than float32.

Every run record states the precision used and why (`describe`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

from . import machine

AMP_ENV = "ALIGNLIB_AMP"
AMP_MODES = ("none", "fp16", "bf16")
SETTINGS = ("auto", *AMP_MODES)
DTYPES = {"none": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# A GradScaler starts at 2**16 and halves the scale at every skipped step: after 20 skips in a row
# the scale is below 1, so the overflow no longer comes from the scaling but from the model itself.
MAX_SKIPS_IN_A_ROW = 20
# bf16 must beat float32 by this factor on CPU: autocast also pays for casting weights and activations.
CPU_BF16_MIN_SPEEDUP = 1.25


@dataclass(frozen=True)
class Precision:
    amp: str  # what runs: "none", "fp16" or "bf16"
    requested: str  # the setting that asked for it
    reason: str  # why, in words, for the run record

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.amp]


def _check_setting(amp: str, where: str) -> str:
    if amp not in SETTINGS:
        raise ValueError(f"unknown precision {amp!r} ({where}); use one of {', '.join(SETTINGS)}")
    return amp


@functools.lru_cache(maxsize=None)
def cpu_matmul_gflops(repeats: int = 3) -> dict:
    """float32 and bfloat16 GFLOP/s of a (128 x 576) @ (576 x 1536) product on this CPU (the MLP
    shape of SmolLM2-135M), measured once per process; well under a second where bf16 is emulated."""
    return {name: machine.matmul_gflops(dtype, repeats=repeats, shape=(128, 576, 1536), warmup=1)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def cuda_native_bf16(device: torch.device) -> tuple[bool, str]:
    """(whether the GPU computes bfloat16 natively, its compute capability "major.minor").

    Native bf16 needs compute capability 8.0 (Ampere) or newer (or a ROCm GPU). A T4 (7.5) answers True to
    plain `torch.cuda.is_bf16_supported()`, which counts emulation, but runs bf16 far slower than fp16: only
    native support counts here.
    """
    major, minor = torch.cuda.get_device_capability(device)
    native = torch.cuda.is_bf16_supported(including_emulation=False) and (major >= 8 or bool(torch.version.hip))
    return native, f"{major}.{minor}"


def resolve(amp: str, device: torch.device | str) -> Precision:
    """The precision a run uses on `device` for the setting `amp`, and why.

    ``$ALIGNLIB_AMP`` overrides `amp` when set. "auto" is decided by the hardware (module docstring);
    an explicit "none"/"fp16"/"bf16" is used as asked, except bf16 on a GPU that has no bf16.
    """
    device = torch.device(device)
    requested = _check_setting(amp, "config amp")
    source = "config"
    if os.environ.get(AMP_ENV, "").strip():
        requested = _check_setting(os.environ[AMP_ENV].strip().lower(), f"${AMP_ENV}")
        source = f"${AMP_ENV}"
    if device.type == "cuda":
        bf16_ok, capability = cuda_native_bf16(device)
        name = torch.cuda.get_device_name(device)
        if requested == "bf16" and not bf16_ok:
            raise ValueError(f"{name} (compute capability {capability}) has no native bfloat16: torch would emulate it, "
                             "several times slower. Use amp='fp16' (with loss scaling) or 'auto'")
        if requested == "auto":
            amp = "bf16" if bf16_ok else "fp16"
            return Precision(amp, "auto", f"auto on {name} (compute capability {capability}): " + (
                "the GPU computes bf16 natively" if bf16_ok else "no native bf16 on this GPU, so fp16 with loss scaling"))
        return Precision(requested, requested, f"{requested} set by the {source} on {name}")
    if requested != "auto":
        return Precision(requested, requested, f"{requested} set by the {source} on {device.type}")
    rates = cpu_matmul_gflops()
    faster = rates["bf16"] >= CPU_BF16_MIN_SPEEDUP * rates["fp32"]
    flags = machine.cpu_bf16_flags()
    measured = (f"measured bf16 {rates['bf16']:.1f} vs fp32 {rates['fp32']:.1f} GFLOP/s "
                f"(CPU: {torch.backends.cpu.get_cpu_capability()}, native bf16 flags: {', '.join(flags) or 'none'})")
    return Precision("bf16" if faster else "none", "auto",
                     f"auto on cpu: {measured}, so {'bf16 autocast' if faster else 'float32'}")


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """"none", "bf16" or "fp16": the precision a run with setting `amp` uses on `device` (see `resolve`)."""
    return resolve(amp, device).amp


def describe(amp: str, device: torch.device | str) -> dict:
    """The record fields of a run's precision: {"precision", "precision_requested", "precision_reason"}."""
    p = resolve(amp, device)
    return {"precision": p.amp, "precision_requested": p.requested, "precision_reason": p.reason}


def autocast(amp: str, device: torch.device):
    """The autocast context of the precision `amp` resolves to on `device` (float32: autocast off)."""
    amp = resolve_amp(amp, device)
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=DTYPES[amp])


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for fp16 (on CUDA or CPU); a disabled one passes everything through."""
    return torch.amp.GradScaler(device.type, enabled=resolve_amp(amp, device) == "fp16")


def check_finite(values: torch.Tensor, what: str, where: str) -> None:
    """FloatingPointError "non-finite <what> <where>" unless every element of `values` is finite.

    For the numbers a step starts from (rewards, losses): a NaN or inf there has no remedy, unlike
    an overflowing fp16 gradient, which the loss scaler absorbs by skipping the step.
    """
    if not torch.isfinite(values).all():
        raise FloatingPointError(f"non-finite {what} {where}")


def backward(loss: torch.Tensor, scaler: torch.amp.GradScaler, what: str, where: str, accumulated: int = 1) -> None:
    """The backward pass of one (micro-)batch: of loss / accumulated, times the fp16 loss scale.

    Args:
        loss: () the batch's loss; non-finite: FloatingPointError naming `what` (e.g. "RM loss"),
            its value and `where` (the step).
        accumulated: micro-batches whose gradients add up to one step's (gradient accumulation),
            so that the step follows their mean loss.
    """
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite {what} ({loss.item()}) {where}")
    scaler.scale(loss / accumulated).backward()


def clip_and_step(optimizer, scaler: torch.amp.GradScaler, params, max_grad_norm: float, where: str,
                  clip=torch.nn.utils.clip_grad_norm_) -> float | None:
    """Unscale, clip the gradient norm, step: the end of every training step.

    Returns the gradient norm before clipping, or None when the fp16 loss scaler found inf/NaN
    gradients and skipped the step (the scale is then halved; the weights are untouched).
    Without loss scaling a non-finite gradient norm has no such remedy: FloatingPointError.
    `clip(params, max_norm)` clips and returns the norm (`Accelerator.clip_grad_norm_` under FSDP).
    """
    scaler.unscale_(optimizer)
    norm = clip(params, max_grad_norm)
    finite = bool(torch.isfinite(norm))
    if not finite and not scaler.is_enabled():
        raise FloatingPointError(f"non-finite gradient norm {where} (float32 or bf16, no loss scaling to absorb "
                                 "it); lower the learning rate, or check the inputs")
    scaler.step(optimizer)  # a no-op when the scaler found inf/NaN
    scaler.update()
    return float(norm) if finite else None


def optimizer_step(optimizer, scaler: torch.amp.GradScaler, params, max_grad_norm: float, where: str,
                   clip=torch.nn.utils.clip_grad_norm_) -> float | None:
    """`clip_and_step`, then clear the gradients for the next step's backward passes; returns its gradient norm."""
    norm = clip_and_step(optimizer, scaler, params, max_grad_norm, where, clip=clip)
    optimizer.zero_grad(set_to_none=True)
    return norm


def skipped_steps(grad_norms: list) -> int:
    """How many steps of a training history the fp16 loss scaler skipped (logged as grad_norm None)."""
    return sum(g is None for g in grad_norms)


def raise_if_stuck(grad_norms: list, where: str) -> None:
    """FloatingPointError when the last MAX_SKIPS_IN_A_ROW steps were all skipped by the loss scaler
    (`grad_norms` holds None for a skipped step): the gradients overflow at any scale."""
    tail = grad_norms[-MAX_SKIPS_IN_A_ROW:]
    if len(tail) == MAX_SKIPS_IN_A_ROW and all(g is None for g in tail):
        raise FloatingPointError(
            f"the fp16 loss scaler skipped {MAX_SKIPS_IN_A_ROW} steps in a row {where}: the scale has fallen below 1, "
            "so the gradients overflow on their own. Use amp='bf16' (a GPU with bf16) or 'none', or lower the "
            "learning rate.")
