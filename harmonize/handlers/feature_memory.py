"""A memory of the most recent samples' features, on which domain heads train as a stronger adversary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from harmonize.errors import ConfigError

__all__ = ["FeatureMemory"]


class FeatureMemory:
    """The detached features and confound targets of the last ``capacity`` samples (first in, first out).

    A domain head trained on one batch at a time is fooled by an extractor that only has to beat that batch; a
    head trained at every iteration on the memory (about an epoch of samples, each as the extractor last saw it)
    stays close to the best linear read-out of the confound from the current training features, which is what a
    fresh probe measures afterwards. The features are at most one epoch old; no extra forward pass is needed.

    Args:
        capacity: samples kept (e.g. the training set's size); the oldest leave first.

    Raises:
        ConfigError: ``capacity`` below 1.
    """

    def __init__(self, capacity: int) -> None:
        if int(capacity) != capacity or capacity < 1:
            raise ConfigError(f"head_memory (the FeatureMemory capacity) must be a positive integer, got {capacity!r}.")
        self.capacity = int(capacity)
        self.features: torch.Tensor | None = None
        self.targets: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return 0 if self.features is None else len(self.features)

    def push(self, features: torch.Tensor, targets: Mapping[str, torch.Tensor]) -> None:
        """Add a batch (features ``(batch, dim)``, one target vector per confound) and drop the oldest beyond capacity.

        Raises:
            ValueError: a batch whose feature size or confounds differ from the memory's.
        """
        features = _plain(features)
        targets = {name: _plain(t) for name, t in targets.items()}
        if self.features is not None and (
            features.shape[1:] != self.features.shape[1:] or set(targets) != set(self.targets)
        ):
            raise ValueError(
                f"FeatureMemory holds features of shape {tuple(self.features.shape[1:])} for confounds "
                f"{sorted(self.targets)}; got {tuple(features.shape[1:])} for {sorted(targets)}."
            )
        if self.features is None:
            self.features = features[-self.capacity:].clone()
            self.targets = {name: t[-self.capacity:].clone() for name, t in targets.items()}
            return
        self.features = torch.cat([self.features, features])[-self.capacity:]
        self.targets = {name: torch.cat([self.targets[name], t])[-self.capacity:] for name, t in targets.items()}

    def contents(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The stored features and targets, oldest first.

        Raises:
            RuntimeError: the memory is empty.
        """
        if self.features is None:
            raise RuntimeError("FeatureMemory is empty: push a batch first.")
        return self.features, dict(self.targets)

    def clear(self) -> None:
        """Forget every sample."""
        self.features, self.targets = None, {}

    def state_dict(self) -> dict[str, Any]:
        """The stored tensors (for checkpoints)."""
        return {"capacity": self.capacity, "features": self.features, "targets": dict(self.targets)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (kept up to this memory's capacity)."""
        self.clear()
        if state.get("features") is not None:
            self.push(state["features"], state["targets"])


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    """A detached plain tensor (a MONAI ``MetaTensor``'s per-sample metadata would not survive slicing)."""
    return tensor.detach().as_subclass(torch.Tensor)
