"""What a training run under ``torch.distributed`` (``torchrun``, the bundles' ``multi_gpu_train.json``) shares.

``DistributedDataParallel`` keeps the trainer's network the same on every process. The rest of what harmonize
trains lives outside it: the domain heads of :class:`~harmonize.handlers.DomainUnlearningHandler` (their own
optimiser), the features of the per-epoch re-fit (:class:`~harmonize.handlers.RefitHeads`), the paper's
alternating extractor step, and the seeds of the site-balanced sampler. These helpers keep them identical across
processes. Each is a no-op in a single process (or a process group of one), so single-process training is
unchanged, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import torch
from torch import nn

__all__ = [
    "any_process",
    "average_buffers",
    "average_gradients",
    "broadcast_module",
    "broadcast_object",
    "gather_rows",
    "is_distributed",
    "is_main_process",
    "mean_over_processes",
    "rank",
    "sum_over_processes",
    "world_size",
]

T = TypeVar("T")


def is_distributed() -> bool:
    """Whether this process is one of several of an initialised ``torch.distributed`` process group."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes of the run (1 without an initialised process group)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank (0 without an initialised process group)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """Whether this process writes the run's files: rank 0, or the only process."""
    return rank() == 0


def _collective_device() -> torch.device:
    """Where a collective's own tensors live: the current GPU under NCCL (which reduces CUDA tensors only), else CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(value: T, src: int = 0) -> T:
    """``value`` of process ``src`` on every process (a picklable object; returned as is in one process)."""
    if not is_distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of process ``src``'s ``module`` into every process's (as DDP does at start)."""
    if not is_distributed():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        torch.distributed.broadcast(tensor.data, src=src)


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Average ``module``'s floating-point buffers (BatchNorm running statistics) over processes; others from rank 0."""
    if not is_distributed():
        return
    n = world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            torch.distributed.all_reduce(buffer.data)
            buffer.data.div_(n)
        else:
            torch.distributed.broadcast(buffer.data, src=0)


def any_process(flags: Sequence[bool]) -> list[bool]:
    """Element-wise: whether each flag is set on at least one process (``flags`` itself in one process)."""
    if not is_distributed() or not flags:
        return [bool(f) for f in flags]
    found = torch.tensor([float(bool(f)) for f in flags], device=_collective_device())
    torch.distributed.all_reduce(found, op=torch.distributed.ReduceOp.MAX)
    return [bool(f) for f in found.tolist()]


def mean_over_processes(values: Mapping[str, float]) -> dict[str, float]:
    """Each value's mean over the processes that have its key (``values`` itself in one process)."""
    if not is_distributed():
        return dict(values)
    everyone: list[Mapping[str, float] | None] = [None] * world_size()
    torch.distributed.all_gather_object(everyone, dict(values))
    keys = list(dict.fromkeys(k for shard in everyone for k in shard))
    return {k: sum(s[k] for s in everyone if k in s) / sum(k in s for s in everyone) for k in keys}


@torch.no_grad()
def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over processes (``tensor`` itself in one process; the input is not changed)."""
    if not is_distributed():
        return tensor
    total = tensor.to(_collective_device(), copy=True)
    torch.distributed.all_reduce(total)
    return total.to(tensor.device)


@torch.no_grad()
def average_gradients(groups: Sequence[tuple[Iterable[nn.Parameter], float]]) -> None:
    """Replace each parameter's gradient by its weighted mean over processes, so every process takes the same step.

    Within a group the gradient becomes ``sum_r w_r g_r / sum_r w_r``, where ``w_r`` is the group's weight on
    process ``r`` (the samples its loss averaged over: the gradient of the loss of the union of the processes'
    batches; equal weights give the plain mean, as DDP's). A parameter without a gradient on some process counts
    as a zero gradient there; one without a gradient on every process keeps none (an optimiser skips it, as in one
    process). A group whose weights are zero on every process gets zero gradients.

    Args:
        groups: ``(parameters, weight)`` pairs; every process passes the same parameters in the same order.
    """
    if not is_distributed():
        return
    dist = torch.distributed
    groups = [(list(params), float(weight)) for params, weight in groups]
    params = [p for ps, _ in groups for p in ps]
    if not params:
        return
    device = params[0].device
    totals = torch.tensor([w for _, w in groups], dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.MAX)
    flags = iter(has_grad.tolist())
    for (ps, weight), total in zip(groups, totals.tolist()):
        scale = weight / total if total > 0 else 0.0
        for p in ps:
            if not next(flags):
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.mul_(scale)
            dist.all_reduce(p.grad)


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """The rows of ``tensor`` from every process, concatenated in rank order (shards may have different lengths).

    Every process passes a tensor of the same dtype and the same shape after the first dimension; it receives
    the same result. The lengths are gathered first, and each shard is padded to the longest for the collective.
    """
    if not is_distributed():
        return tensor
    dist = torch.distributed
    n = world_size()
    sizes = [torch.zeros(1, dtype=torch.int64, device=tensor.device) for _ in range(n)]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device))
    lengths = [int(s.item()) for s in sizes]
    longest = max(lengths)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    shards = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(shards, padded.contiguous())
    return torch.cat([shard[:length] for shard, length in zip(shards, lengths)])
