"""Plan large allocations against the machine's memory, and refuse what cannot fit before it is tried.

A resampled volume (``harmonize preprocess --spacing 0.2``) or a network's activations for a batch
(``--channels 512,1024,...``) can ask for more memory than the machine has: the allocation then fails deep inside
PyTorch or the kernel kills the process. :func:`check_memory` compares an estimate with what is available and
raises a :class:`~harmonize.errors.ResourceError` that gives the number of GiB asked for, the GiB available, and how
to ask for less. :func:`resample_bytes` and :func:`training_bytes` give the estimates.

The memory available is :func:`available_memory`: the ``HARMONIZE_MEMORY_LIMIT_GB`` environment variable when set
(a job's share of a node; tests set it), else ``psutil.virtual_memory().available`` when psutil is installed, else
``MemAvailable`` of ``/proc/meminfo``. When none is known, nothing is refused.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from harmonize import defaults
from harmonize.errors import ConfigError, ResourceError

__all__ = ["available_memory", "check_memory", "gib", "resample_bytes", "training_bytes"]

#: Bytes of one float32 voxel or activation.
FLOAT_BYTES = 4
#: Float32 copies of the volume that resampling holds at once (input as float, output, the interpolation's grid).
RESAMPLE_COPIES = 3
#: Float32 numbers per parameter while training with Adam: weight, gradient, two moments.
ADAM_COPIES = 4
#: Per activation kept for the backward pass: the activation and its gradient.
ACTIVATION_COPIES = 2
#: Where Linux reports the memory available to new allocations.
MEMINFO = Path("/proc/meminfo")


def gib(nbytes: float) -> str:
    """``nbytes`` in GiB as text, e.g. ``'12.3 GiB'``."""
    return f"{nbytes / 2**30:.1f} GiB"


def available_memory() -> tuple[int | None, str]:
    """The bytes new allocations may use, and where the figure comes from (``None``: unknown).

    Raises:
        ConfigError: ``HARMONIZE_MEMORY_LIMIT_GB`` is set to something other than a positive number.
    """
    limit = os.environ.get(defaults.MEMORY_LIMIT_ENV, "").strip()
    if limit:
        try:
            value = float(limit)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(
                f"Environment variable {defaults.MEMORY_LIMIT_ENV}={limit!r} must be a positive number of GiB "
                f"(e.g. 16); unset it to use the machine's available memory."
            )
        return int(value * 2**30), f"the limit {defaults.MEMORY_LIMIT_ENV}={limit}"
    if importlib.util.find_spec("psutil") is not None:  # not MONAI's optional_import: preprocessing workers skip MONAI
        import psutil

        return int(psutil.virtual_memory().available), "available memory"
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available memory"
    except (OSError, ValueError, IndexError):
        pass
    return None, "unknown"


def check_memory(nbytes: float, what: str, lower: str) -> None:
    """Refuse an allocation of about ``nbytes`` that would not fit in the memory available.

    Up to :data:`~harmonize.defaults.MEMORY_FRACTION` of the available memory may be planned for.

    Args:
        nbytes: the estimate, in bytes.
        what: what asks for it, for the message (e.g. ``"row 3 (subject 'sub-01'): resampling to 0.2 mm"``).
        lower: how to ask for less (e.g. ``"choose a coarser --spacing"``).

    Raises:
        ResourceError: naming ``what``, the GiB asked for and available, and ``lower``.
    """
    available, source = available_memory()
    if available is None or nbytes <= defaults.MEMORY_FRACTION * available:
        return
    raise ResourceError(
        f"{what} needs about {gib(nbytes)} of memory, more than this machine can give ({gib(available)}, "
        f"{source}; at most {defaults.MEMORY_FRACTION:.0%} of it is planned for). To ask for less, {lower}."
    )


def resample_bytes(shape: Sequence[int], spacing: Sequence[float], target_spacing: float | Sequence[float],
                   volumes: int = 1) -> int:
    """Bytes to resample ``volumes`` float32 volumes of ``shape`` voxels of ``spacing`` mm to ``target_spacing``."""
    targets = [float(target_spacing)] * len(shape) if isinstance(target_spacing, (int, float)) else target_spacing
    voxels = math.prod(max(1, math.ceil(n * abs(float(s)) / t)) for n, s, t in zip(shape, spacing, targets))
    return voxels * FLOAT_BYTES * RESAMPLE_COPIES * volumes


def training_bytes(build: Callable[[], nn.Module] | nn.Module, input_shape: Sequence[int]) -> int:
    """Bytes of one training step of a network on a batch of ``input_shape`` (batch, channels, *spatial).

    The network is built (or copied) on PyTorch's ``meta`` device, which allocates nothing, and run on an empty
    input of that shape; each layer's output is counted as kept for the backward pass with its gradient, and each
    parameter four times (Adam).

    Raises:
        ValueError: the network refuses the input (e.g. too small for its blocks), with the network's message.
    """
    with torch.device("meta"):
        network = build() if not isinstance(build, nn.Module) else copy.deepcopy(build).to("meta")
    counted = [0]

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        counted[0] += sum(o.numel() for o in outputs if isinstance(o, torch.Tensor))

    leaves = [m for m in network.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        network(torch.empty(*input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    parameters = sum(p.numel() for p in network.parameters())
    return (counted[0] * ACTIVATION_COPIES + parameters * ADAM_COPIES) * FLOAT_BYTES
