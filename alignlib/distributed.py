"""The processes of a run under `accelerate launch`: which rows each one takes, and the results of all.

Under `accelerate launch` with N processes, each process trains on its share of every batch, DDP
averages the gradients over the processes, and a step's metrics are computed over the rows of all
of them. Without the launcher there is one process (rank 0 of 1): its share is the whole batch and
gathering or reducing returns its own values, so one process computes exactly what it would
compute without any of this.
"""

from __future__ import annotations

import contextlib

import torch


def share(rows, rank: int, world: int):
    """Process `rank`'s contiguous share of `rows`, split evenly over `world` processes.

    Args:
        rows: (n, ...) tensor or list, n a multiple of `world`.
    Returns:
        (n // world, ...) the rows rank * n // world up to (rank + 1) * n // world. Concatenating the
        shares in rank order gives `rows` back: it undoes `gather`.
    """
    size = len(rows) // world
    return rows[rank * size:(rank + 1) * size]


def dealt(items: list, rank: int, world: int) -> list:
    """Process `rank`'s items of `items` dealt round-robin over `world` processes: items rank, rank + world, ..."""
    return items[rank::world]


def gather(accelerator, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(n, ...) this process's rows -> (world * n, ...) every process's rows, in rank order, on the CPU.

    The collective runs on `device`, the process's own (NCCL gathers only GPU tensors). One
    process: `rows` itself, on the CPU.
    """
    return accelerator.gather(rows.to(device)).cpu()


def mean(accelerator, value: torch.Tensor) -> float:
    """() tensor of this process -> its mean over all processes, as a float (no gradient)."""
    return float(accelerator.reduce(value.detach(), "mean"))


def summed(accelerator, sums: dict, device: torch.device) -> dict:
    """{name: number} of this process -> {name: float}: each summed over all processes, in float64."""
    total = accelerator.reduce(torch.tensor(list(sums.values()), dtype=torch.float64, device=device), "sum")
    return dict(zip(sums, total.tolist()))


def accumulating(accelerator, model, last: bool):
    """The context of one micro-batch's forward pass under gradient accumulation.

    DDP averages the gradients over the processes in the backward pass of a forward run outside
    `no_sync`: only the step's last micro-batch (`last`) needs it, the ones before accumulate
    locally. One process: no effect.
    """
    return contextlib.nullcontext() if last else accelerator.no_sync(model)
