"""Run a trained network over a dataset and collect its predictions and tapped features, one row per scan."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from harmonize.keys import Keys
from harmonize.networks.feature_taps import FeatureTaps

__all__ = ["FeatureSet", "collect_features"]


@dataclass
class FeatureSet:
    """Features, predictions and metadata of a set of scans (numpy arrays, one row per scan).

    Attributes:
        features: ``(n, d)`` pooled, concatenated tapped features.
        predictions: ``(n, ...)`` network outputs (e.g. predicted age ``(n, 1)``), or ``None`` if not kept.
        meta: per-scan metadata by batch key (``subject_id``, ``site``, ``age``, ``sex``, ...).
    """

    features: np.ndarray
    predictions: np.ndarray | None
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def subset(self, keep: np.ndarray) -> FeatureSet:
        """The rows where ``keep`` is true."""
        preds = None if self.predictions is None else self.predictions[keep]
        return FeatureSet(self.features[keep], preds, {k: v[keep] for k, v in self.meta.items()})


@torch.no_grad()
def collect_features(
    network: nn.Module,
    taps: str | Sequence[str],
    batches: Iterable[dict],
    device: str | torch.device = "cpu",
    meta_keys: Sequence[str] = (Keys.SUBJECT_ID, Keys.SITE, Keys.AGE, Keys.SEX),
    keep_predictions: bool = True,
) -> FeatureSet:
    """Evaluate ``network`` on every batch, keeping its tapped features, its outputs and the batch metadata.

    Args:
        network: a trained network (put in eval mode for the run, then restored).
        taps: layer name(s) to read features from (see :class:`~harmonize.networks.FeatureTaps`).
        batches: an iterable of dictionary batches (e.g. a MONAI ``DataLoader``).
        device: where to run the network.
        meta_keys: batch keys copied into :attr:`FeatureSet.meta` (missing keys are skipped).
        keep_predictions: keep the network's outputs (set False for large segmentation outputs).
    """
    tap = FeatureTaps(network, taps)
    was_training = network.training
    network.eval()
    feats, preds, meta = [], [], {k: [] for k in meta_keys}
    try:
        for batch in batches:
            out = network(torch.as_tensor(batch[Keys.IMAGE]).to(device))
            feats.append(tap.features().float().cpu().numpy())
            if keep_predictions:
                preds.append(torch.as_tensor(out).float().cpu().numpy())
            for k in meta_keys:
                if k in batch:
                    value = batch[k]
                    meta[k].append(np.asarray(value.cpu() if isinstance(value, torch.Tensor) else value).reshape(-1))
            tap.clear()
    finally:
        tap.remove()
        network.train(was_training)
    if not feats:
        raise ValueError("collect_features got no batches.")
    return FeatureSet(
        np.concatenate(feats),
        np.concatenate(preds) if keep_predictions else None,
        {k: np.concatenate(v) for k, v in meta.items() if v},
    )
