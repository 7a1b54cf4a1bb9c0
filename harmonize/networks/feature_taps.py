"""Take features from named layers of any network by forward hooks.

Unlearning needs the features a domain head reads. Rather than asking users to rewrite their network so that
it returns features, :class:`FeatureTaps` registers forward hooks on submodules named as in
``network.named_modules()`` (e.g. ``"encoder"`` or ``"model.1.submodule.2"``), keeps their outputs from the
most recent forward pass (with the autograd graph), and returns them pooled to one vector per sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from harmonize.errors import ConfigError

__all__ = ["FeatureTaps", "pool_features"]


def pool_features(x: torch.Tensor) -> torch.Tensor:
    """Reduce a layer output to one vector per sample: global average over the spatial dimensions.

    Args:
        x: ``(B, C)`` features (returned as they are) or ``(B, C, *spatial)`` feature maps.

    Returns:
        ``(B, C)`` tensor.
    """
    if x.ndim < 2:
        raise ValueError(f"features must have a batch and a channel dimension, got shape {tuple(x.shape)}.")
    return x.flatten(2).mean(dim=2) if x.ndim > 2 else x


class FeatureTaps:
    """Forward hooks on named submodules that capture their outputs during the network's forward pass.

    Several taps are pooled (:func:`pool_features`) and concatenated, which gives a multi-point head, e.g. the
    bottleneck plus the final layer of a U-Net (Dinsdale et al. 2021, segmentation experiments).

    Args:
        network: any ``nn.Module``.
        names: names of the submodules to tap, as in ``network.named_modules()``.

    Raises:
        ConfigError: a name that is not a submodule of the network (the message lists close matches).

    Example::

        taps = FeatureTaps(net, ["encoder"])
        pred = net(images)           # the hook stores the encoder output
        feats = taps.features()      # (B, C) with the autograd graph
    """

    def __init__(self, network: nn.Module, names: str | Sequence[str]) -> None:
        self.names = [names] if isinstance(names, str) else list(names)
        if not self.names:
            raise ConfigError("FeatureTaps needs at least one layer name in `names`.")
        modules = dict(network.named_modules())
        missing = [n for n in self.names if n not in modules]
        if missing:
            known = [n for n in modules if n]
            raise ConfigError(
                f"Layer name(s) {missing} are not submodules of {type(network).__name__}. "
                f"Pass names as listed by `network.named_modules()`, for example: {known[:12]}"
                + (" ..." if len(known) > 12 else "")
            )
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[n].register_forward_hook(self._make_hook(n)) for n in self.names
        ]

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"Tapped layer '{name}' returned {type(output).__name__}, expected a tensor.")
            self._outputs[name] = output

        return hook

    def features(self) -> torch.Tensor:
        """Pooled, concatenated features of the most recent forward pass, shape ``(B, sum of channels)``.

        Raises:
            RuntimeError: when no forward pass ran since the last :meth:`clear`.
        """
        missing = [n for n in self.names if n not in self._outputs]
        if missing:
            raise RuntimeError(f"No features captured for {missing}: run the network's forward pass first.")
        pooled = [pool_features(self._outputs[n]) for n in self.names]
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)

    def clear(self) -> None:
        """Forget the captured outputs (frees their graphs)."""
        self._outputs.clear()

    def remove(self) -> None:
        """Remove the hooks from the network."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()

    @torch.no_grad()
    def feature_dim(self, network: nn.Module, example_input: torch.Tensor) -> int:
        """Size of :meth:`features` for an example input (runs one forward pass without gradients).

        Args:
            network: the network the taps are attached to.
            example_input: a batch the network accepts, e.g. ``torch.zeros(2, 1, 32, 32, 32)``.
        """
        was_training = network.training
        network.eval()
        try:
            network(example_input)
            dim = int(self.features().shape[1])
        finally:
            network.train(was_training)
            self.clear()
        return dim
