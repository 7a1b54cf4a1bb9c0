"""What a bundle's ``forget.json`` needs: its trained model (brain-age or segmentation), and the subjects to forget.

``forget.json`` overlays ``train.json`` (``monai.bundle run --config_file "['configs/train.json',
'configs/forget.json']"``) and runs :func:`~harmonize.workflows.forget.forget_model` on the weights that
``train.json`` saved in ``models/model.pt``: the same stages, audit and report as ``harmonize forget``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from harmonize import defaults
from harmonize.bundle.unlearning_handler import unlearning_settings
from harmonize.data.forget_list import mark_forget
from harmonize.data.manifest import read_manifest
from harmonize.data.site_index import SITE_INDEX_FILENAME, CategoryIndex
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys
from harmonize.workflows.brain_age import BrainAgeModel, BrainAgeSettings
from harmonize.workflows.models import SegmentationModel

__all__ = ["forget_manifest", "trained_brain_age_model", "trained_segmentation_model"]

logger = logging.getLogger(__name__)


def forget_manifest(manifest: str | os.PathLike, fraction: float = defaults.FORGET_FRACTION,
                    seed: int = defaults.SEED) -> pd.DataFrame:
    """The manifest's rows with their ``forget`` column, or, when it marks nobody, ``fraction`` of the training rows.

    A manifest whose ``forget`` column marks some rows is returned as read (its list is checked by
    :func:`~harmonize.data.forget_list.forget_rows`); otherwise :func:`~harmonize.data.forget_list.mark_forget`
    withdraws a random ``fraction`` of each site's training rows (e.g. the embedded cohort's).
    """
    frame = read_manifest(manifest)
    if Keys.FORGET in frame and bool(frame[Keys.FORGET].any()):
        return frame
    logger.info("%s marks no subject to forget: withdrawing %.0f %% of the training rows at random (seed %d).",
                manifest, 100 * fraction, seed)
    return mark_forget(frame, fraction, seed)


def trained_brain_age_model(
    network: nn.Module,
    ckpt_dir: str | os.PathLike,
    transform: Callable[[Mapping[str, Any]], Any] | None = None,
    taps: Sequence[str] | str = ("encoder",),
    batch_size: int = defaults.BATCH_SIZE,
    max_epochs: int = 30,
    learning_rate: float = defaults.LEARNING_RATE,
    unlearning: Mapping[str, Any] | None = None,
    seed: int = defaults.SEED,
    device: str | torch.device = "cpu",
) -> BrainAgeModel:
    """A bundle's trained brain-age network (``<ckpt_dir>/model.pt``) with its site index and training settings.

    Args:
        network: the bundle's ``network_def`` (its weights are replaced by the saved ones).
        ckpt_dir: the folder of ``model.pt`` and ``site_index.json`` (``train.json``'s ``ckpt_dir``).
        transform: the bundle's ``transforms``.
        taps, batch_size, max_epochs, learning_rate, seed: the bundle's training ids (the oracle retrains with
            them).
        unlearning: the bundle's ``unlearning`` dict (method, mode, beta, ...), for the oracle (``None``: plain).
        device: where to run.

    Raises:
        HarmonizeError: no weights or site index in ``ckpt_dir`` (run ``train.json`` first), or weights that do not
            fit ``network``.
    """
    site_index = _load_trained(network, ckpt_dir)
    settings = BrainAgeSettings(
        unlearning=unlearning_settings(unlearning),
        max_epochs=int(max_epochs), batch_size=int(batch_size), lr=float(learning_rate),
        channels=tuple(getattr(network, "channels", BrainAgeSettings.channels)),
        feature_dim=getattr(network, "feature_dim", BrainAgeSettings.feature_dim),
        taps=(taps,) if isinstance(taps, str) else tuple(taps), seed=int(seed), device=str(device),
    )
    network.to(device).eval()
    return BrainAgeModel(network, None, settings, site_index, math.nan, [], transform=transform)


def trained_segmentation_model(
    network: nn.Module,
    ckpt_dir: str | os.PathLike,
    transform: Callable[[Mapping[str, Any]], Any] | None = None,
    taps: Sequence[str] | str = ("bottleneck",),
    batch_size: int = defaults.BATCH_SIZE,
    device: str | torch.device = "cpu",
) -> SegmentationModel:
    """A bundle's trained tissue segmenter (``<ckpt_dir>/model.pt``) with its site index, as forgetting reads it.

    The arguments are those of :func:`trained_brain_age_model` (``taps``: the layers the site probe reads), and so
    are the errors it raises.
    """
    site_index = _load_trained(network, ckpt_dir)
    network.to(device).eval()
    return SegmentationModel(network, site_index, (taps,) if isinstance(taps, str) else tuple(taps),
                             device=str(device), transform=transform, batch_size=int(batch_size))


def _load_trained(network: nn.Module, ckpt_dir: str | os.PathLike) -> CategoryIndex:
    """Load ``<ckpt_dir>/model.pt`` into ``network``; return the site index saved beside it.

    Raises:
        HarmonizeError: no weights or site index in ``ckpt_dir``, or weights that do not fit ``network``.
    """
    from harmonize.workflows.model_file import _load_weights, _read

    folder = Path(ckpt_dir)
    weights, index = folder / "model.pt", folder / SITE_INDEX_FILENAME
    for path in (weights, index):
        if not path.is_file():
            raise HarmonizeError(f"{str(path)!r} does not exist: run the bundle's train.json first (it writes the "
                                 "trained weights and the site index there), or give ckpt_dir the folder that holds "
                                 "them.")
    state = _read(weights, "Bundle weights")
    if isinstance(state, Mapping) and "network" in state and isinstance(state["network"], Mapping):
        state = state["network"]
    _load_weights(network, state, weights, "the bundle's network_def")
    return CategoryIndex.load(index)
