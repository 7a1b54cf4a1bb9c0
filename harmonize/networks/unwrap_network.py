"""The network inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper, and the prefix of its names."""

from __future__ import annotations

from torch import nn

__all__ = ["WRAPPED_PREFIX", "unwrap_network"]

#: Prefix of the submodule names of a network wrapped in ``DistributedDataParallel`` (or ``DataParallel``).
WRAPPED_PREFIX = "module."


def unwrap_network(network: nn.Module) -> tuple[nn.Module, str]:
    """The module inside a ``DistributedDataParallel``/``DataParallel`` wrapper, and the prefix of its names.

    A bundle's multi-GPU config wraps the trainer's network, so handlers that read its layers by name or walk its
    modules look inside the wrapper first.

    Args:
        network: a network, wrapped or not.

    Returns:
        ``(inner, prefix)``: the wrapped module and ``"module."``, or ``network`` itself and ``""``.
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    if isinstance(network, wrappers):
        return network.module, WRAPPED_PREFIX
    return network, ""
