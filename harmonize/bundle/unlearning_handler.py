"""Build a bundle's :class:`~harmonize.handlers.DomainUnlearningHandler` from its ``unlearning`` settings dict.

A bundle config holds the unlearning settings as a plain dict (``{"method": "unlearning", "beta": 10, ...}``, the
fields of :class:`~harmonize.workflows.unlearning.UnlearningSettings`). :func:`make_unlearning_handler` checks
that dict, sizes the tapped features on one scan of the training set, and calls the same
:func:`~harmonize.workflows.unlearning.build_unlearning_handler` as ``train_brain_age`` and the demo, so a bundle
trains exactly what the library trains. A network wrapped in ``DistributedDataParallel`` (``multi_gpu_train.json``)
is handled: its taps are looked up under ``module.``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError
from harmonize.handlers import DomainUnlearningHandler
from harmonize.keys import Keys, Method
from harmonize.networks import FeatureTaps, unwrap_network
from harmonize.workflows.unlearning import UnlearningSettings, build_unlearning_handler

__all__ = ["make_unlearning_handler", "unlearning_settings"]


def unlearning_settings(unlearning: Mapping[str, Any] | UnlearningSettings | None) -> UnlearningSettings:
    """Settings from a bundle's ``unlearning`` dict (``None`` means plain training, ``method='none'``).

    Raises:
        ConfigError: a key that is not a field of :class:`UnlearningSettings` (close matches are named), or an
            invalid value.
    """
    if isinstance(unlearning, UnlearningSettings):
        return unlearning
    if unlearning is None:
        return UnlearningSettings(method=Method.NONE)
    fields = [f.name for f in dataclasses.fields(UnlearningSettings)]
    unknown = [k for k in unlearning if k not in fields]
    if unknown:
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), fields, n=3)
            problems.append(f"'{key}'" + (f": did you mean {' or '.join(repr(c) for c in close)}?" if close else ""))
        raise ConfigError(f"Unknown unlearning setting(s); valid ones: {', '.join(fields)}.", problems=problems)
    values = dict(unlearning)
    if values.get("overlap_range") is not None:
        values["overlap_range"] = tuple(values["overlap_range"])
    return UnlearningSettings(**values)


def make_unlearning_handler(
    network: nn.Module,
    taps: str | Sequence[str],
    unlearning: Mapping[str, Any] | UnlearningSettings | None,
    dataset: torch.utils.data.Dataset,
    manifest: str | os.PathLike[str],
) -> DomainUnlearningHandler | None:
    """The domain-unlearning handler that a bundle's settings describe (``None`` for ``method='none'``).

    Args:
        network: the trainer's network (possibly wrapped in ``DistributedDataParallel``).
        taps: layer names of the (unwrapped) network whose features the domain heads read.
        unlearning: the bundle's ``unlearning`` dict (see :func:`unlearning_settings`).
        dataset: the training dataset from :func:`~harmonize.data.dataset.make_dataset` (its first scan sizes
            the features; its ``site_index`` numbers the sites).
        manifest: the manifest the dataset was made from (its training rows set the confounds' classes).

    Returns:
        The handler, to attach to the ``SupervisedTrainer`` of ``network``, or ``None``.

    Raises:
        ConfigError: unknown settings, a tap that is not a layer of the network (close names listed), a single
            site, or an unknown confound.
    """
    settings = unlearning_settings(unlearning)
    if settings.method == Method.NONE:
        return None
    names = [taps] if isinstance(taps, str) else [str(t) for t in taps]
    inner, prefix = unwrap_network(network)
    sizer = FeatureTaps(inner, names)
    try:
        device = next(inner.parameters()).device
        image = torch.as_tensor(dataset[0][Keys.IMAGE]).as_subclass(torch.Tensor)
        feature_dim = sizer.feature_dim(inner, torch.stack([image, image]).to(device))
    finally:
        sizer.remove()
    frame = read_manifest(manifest)
    return build_unlearning_handler(
        network, [prefix + n for n in names], feature_dim, settings, frame, dataset.site_index
    )
