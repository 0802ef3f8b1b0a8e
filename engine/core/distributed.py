"""Data-parallel training under ``torchrun``: process group, shards, one writer.

``torchrun`` (or ``srun torchrun`` on a SLURM cluster) starts one engine
process per GPU or CPU slot and names each one's place in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
:func:`start_process_group` joins the group (NCCL on CUDA, Gloo on CPU), so
that the training loops can wrap their model in
:class:`torch.nn.parallel.DistributedDataParallel`, split each global batch
between the processes with :func:`batch_share`, and let only the writer (rank
0) write files. Without those variables nothing changes: one process, rank 0
of a world of 1.

Every process draws the same epoch order and the same augmentation from the
same seeded generator, then keeps its own share of each global batch; with
gradients averaged over the processes, a step sees the same global batch as one
process would. Only batch-norm statistics differ (each process normalises its
own share), which is why results match one process within a tolerance, not
bitwise.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from slidewise.engine.core.placement import Placement


def start_process_group(placement: Placement, device: str) -> None:
    """Join the process group of a ``torchrun`` launch (no-op for one process).

    Args:
        placement: This process's place (:meth:`Placement.from_environment`).
        device: The job's device option: CUDA uses NCCL and this process's
            local GPU; anything else uses Gloo.
    """
    if not placement.parallel or dist.is_initialized():
        return
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(placement.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def end_process_group() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def current_placement() -> Placement:
    """This process's placement in the joined group (rank 0 of 1 when none)."""
    if not dist.is_initialized():
        return Placement()
    return Placement(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def check_share(batch_size: int) -> None:
    """Refuse a global batch that some ``torchrun`` process would get no item of.

    Raises:
        InputError: fewer items per batch than processes.
    """
    from slidewise.engine.core.errors import InputError

    world = current_placement().world_size
    if batch_size < world:
        raise InputError(
            f"BATCH_SIZE {batch_size} is smaller than the {world} torchrun processes: "
            f"use a batch size of at least {world}, or fewer processes."
        )


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped for data-parallel training (unchanged for one process).

    Unused parameters are allowed: a multi-region model leaves the decoders of
    the other regions out of a step's loss.
    """
    if not current_placement().parallel:
        return model
    if device.type != "cuda":
        return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[index], find_unused_parameters=True
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a data-parallel wrapper (or ``model`` itself)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(model, nn.parallel.DistributedDataParallel) and inner else model


def batch_share(n_items: int, placement: Placement | None = None) -> slice:
    """This process's slice of a global batch of ``n_items``.

    The shares differ by at most one item; a process may get none when the
    batch is smaller than the world.
    """
    place = placement or current_placement()
    base, extra = divmod(n_items, place.world_size)
    start = place.rank * base + min(place.rank, extra)
    return slice(start, start + base + (1 if place.rank < extra else 0))


def mean_over_processes(value: float) -> float:
    """The mean of ``value`` over the processes (``value`` itself for one)."""
    if not current_placement().parallel:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total.item()) / dist.get_world_size()


def check_in_step(model: nn.Module) -> None:
    """Check that every process ends with rank 0's weights (no-op for one process).

    Data-parallel training keeps the processes' parameters equal; a difference
    means a gradient was not shared, and the model rank 0 writes would not be
    the one the run trained.

    Raises:
        RuntimeError: some process's parameters differ from rank 0's.
    """
    if not current_placement().parallel:
        return
    with torch.no_grad():
        mine = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
        reference = mine.clone()
        dist.broadcast(reference, src=0)
        gap = torch.tensor([float((mine - reference).abs().max())], dtype=torch.float64)
        dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    if float(gap.item()) > 1e-5:
        raise RuntimeError(
            f"Data-parallel processes ended with different weights (max difference "
            f"{float(gap.item()):.3g}): a gradient was not shared."
        )


def share_gradients(params: list[nn.Parameter] | list[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over the processes (no-op for one process).

    For training loops that do not go through one ``forward`` (separate encoder
    and decoder calls, detection losses): call it between ``backward`` and the
    optimiser step. The gradients travel as one flat tensor.
    """
    placement = current_placement()
    if not placement.parallel:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.detach().flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= placement.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def process_generator(generator: torch.Generator) -> torch.Generator:
    """A generator for this process's share of a batch, drawn from the shared ``generator``.

    Random draws whose number depends on the batch size (masks of masked
    pre-training) must not make the processes' shared generators drift apart:
    every process takes one seed from ``generator`` (the same draw everywhere)
    and draws its own share's randomness from a generator of that seed plus its
    rank. With one process ``generator`` itself is returned (runs stay as before).
    """
    placement = current_placement()
    if not placement.parallel:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator().manual_seed(seed + placement.rank)
