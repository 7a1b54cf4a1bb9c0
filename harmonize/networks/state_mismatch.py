"""Where a saved state does not fit a network: missing, unexpected and mis-shaped tensors, by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["state_mismatches"]


def _tensor_shapes(prefix: str, value: Any) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors of a (nested, string-keyed) state, by dotted name."""
    if torch.is_tensor(value):
        return {prefix: tuple(value.shape)}
    out: dict[str, tuple[int, ...]] = {}
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        for key, item in value.items():
            out.update(_tensor_shapes(f"{prefix}.{key}" if prefix else key, item))
    return out


def state_mismatches(expected: Mapping[str, Any], saved: Any, source: str = "checkpoint", prefix: str = "") -> list[str]:
    """Every way ``saved`` does not fit ``expected`` (e.g. ``network.state_dict()``), one line per tensor.

    Nested string-keyed levels (a handler's state of several modules) are compared by dotted name; levels with
    other keys (an optimizer's per-parameter state, made at its first step) are left to ``load_state_dict``.

    Args:
        expected: the state the network (or object) has now.
        saved: the state read from a file.
        source: what the file is, for the messages (``checkpoint``, ``file``).
        prefix: a name put before every key (e.g. the object's name in a checkpoint).

    Returns:
        Lines ``missing in the <source>: k``, ``unexpected in the <source>: k`` and
        ``shape mismatch for k: <source> [..], this network [..]``; empty when everything fits.
    """
    now, then = _tensor_shapes(prefix, expected), _tensor_shapes(prefix, saved)
    problems = [f"missing in the {source}: {k}" for k in now if k not in then]
    problems += [f"unexpected in the {source}: {k}" for k in then if k not in now]
    problems += [
        f"shape mismatch for {k}: {source} {list(then[k])}, this network {list(now[k])}"
        for k in now if k in then and now[k] != then[k]
    ]
    return problems
