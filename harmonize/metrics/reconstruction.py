"""Per-volume PSNR and SSIM of reconstructions, and the BTA / KTA / UA table of reconstruction unlearning.

As in fastMRI, metrics are computed per volume and then averaged over volumes: PSNR over all voxels of the
volume with the volume's largest target value as peak, SSIM (7 x 7 uniform window) per slice with that same
data range, averaged over the volume's slices. Both use MONAI's :class:`~monai.metrics.PSNRMetric` and
:class:`~monai.metrics.SSIMMetric`.

Xue et al. ("Erase to Enhance") report three accuracies: BTA on the retain test set (brain), KTA on the forget
test set (knee) and UA on the forget training set (the data to unlearn), plus run time (RTE).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.data import DataLoader, list_data_collate
from monai.metrics import PSNRMetric, SSIMMetric
from monai.metrics.regression import KernelType

from harmonize import defaults
from harmonize.errors import ConfigError
from harmonize.keys import Keys

__all__ = [
    "EVALUATION_SETS",
    "PSNR",
    "SSIM",
    "TABLE_COLUMNS",
    "evaluate_reconstruction",
    "mean_metrics",
    "unlearning_row",
    "unlearning_table",
    "volume_metrics",
]

#: Metric names.
PSNR = "psnr"
SSIM = "ssim"
#: SSIM window side (fastMRI).
SSIM_WINDOW = defaults.RECON_SSIM_WINDOW
#: Columns of the unlearning table, in order.
TABLE_COLUMNS: tuple[str, ...] = (
    "method",
    "bta_psnr",
    "bta_ssim",
    "kta_psnr",
    "kta_ssim",
    "ua_psnr",
    "ua_ssim",
    "seconds",
)
#: Evaluation sets of the table: prefix -> the :class:`~harmonize.recon.slices.ReconSplits` set it scores.
EVALUATION_SETS: dict[str, str] = {"bta": "retain_test", "kta": "forget_test", "ua": "forget_train"}
_SETS = EVALUATION_SETS
#: Default batch size for evaluation.
EVAL_BATCH_SIZE = 32

Predictor = Callable[[Mapping[str, Any]], torch.Tensor]


def volume_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    volume_ids: Sequence[str],
    data_range: float | None = None,
    win_size: int = SSIM_WINDOW,
) -> dict[str, dict[str, float]]:
    """PSNR and SSIM of each volume, from its slices.

    Args:
        pred: reconstructions ``(N, 1, H, W)``.
        target: ground truth ``(N, 1, H, W)``.
        volume_ids: the volume of each slice (``N`` ids); slices of a volume need not be adjacent.
        data_range: peak value and SSIM data range; ``None`` uses each volume's largest target value (fastMRI).
        win_size: SSIM window side.

    Returns:
        ``{volume_id: {"psnr": dB, "ssim": value}}``. A perfect reconstruction has PSNR ``inf`` and SSIM 1.

    Raises:
        ValueError: if shapes differ or the number of ids does not match.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    if len(volume_ids) != pred.shape[0]:
        raise ValueError(f"got {len(volume_ids)} volume ids for {pred.shape[0]} slices.")
    slices: dict[str, list[int]] = defaultdict(list)
    for i, vid in enumerate(volume_ids):
        slices[str(vid)].append(i)
    out: dict[str, dict[str, float]] = {}
    for vid, rows in slices.items():
        p, t = pred[rows].float(), target[rows].float()
        peak = float(t.max()) if data_range is None else float(data_range)
        if peak <= 0:
            peak = 1.0  # an empty (all-zero) target: fall back to unit range rather than dividing by zero
        psnr = PSNRMetric(max_val=peak, reduction="none")(p.reshape(1, -1), t.reshape(1, -1))
        ssim = SSIMMetric(spatial_dims=2, data_range=peak, kernel_type=KernelType.UNIFORM, win_size=win_size)(p, t)
        out[vid] = {PSNR: float(psnr.squeeze()), SSIM: float(ssim.mean())}
    return out


def mean_metrics(per_volume: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over volumes (infinite PSNRs of perfect volumes are kept: the mean is then inf)."""
    if not per_volume:
        return {PSNR: math.nan, SSIM: math.nan}
    return {name: sum(v[name] for v in per_volume.values()) / len(per_volume) for name in (PSNR, SSIM)}


@torch.no_grad()
def evaluate_reconstruction(
    predictor: Predictor,
    dataset: Sequence[Mapping[str, Any]],
    batch_size: int = EVAL_BATCH_SIZE,
    target_key: str = Keys.TARGET,
    id_key: str = Keys.VOLUME_ID,
    data_range: float | None = None,
) -> dict[str, float]:
    """Mean per-volume PSNR and SSIM of a predictor on a dataset of reconstruction samples.

    Args:
        predictor: maps a collated batch (dict) to reconstructions ``(B, 1, H, W)`` (e.g. a network in eval mode
            on the batch's input key).
        dataset: samples with ``target_key`` and ``id_key``.
        batch_size: evaluation batch size.
        target_key: key of the ground truth.
        id_key: key of the volume id.
        data_range: see :func:`volume_metrics`.

    Returns:
        ``{"psnr": mean dB, "ssim": mean}`` over volumes.
    """
    preds, targets, ids = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=list_data_collate):
        preds.append(predictor(batch).detach().float().cpu())
        targets.append(torch.as_tensor(batch[target_key]).float().cpu())
        ids += [str(v) for v in batch[id_key]]
    if not preds:
        raise ConfigError("Cannot evaluate a reconstruction on an empty dataset.")
    return mean_metrics(volume_metrics(torch.cat(preds), torch.cat(targets), ids, data_range=data_range))


def unlearning_row(
    method: str,
    predictor: Predictor,
    retain_test: Sequence[Mapping[str, Any]],
    forget_test: Sequence[Mapping[str, Any]],
    forget_train: Sequence[Mapping[str, Any]],
    seconds: float,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, Any]:
    """One row of the unlearning table: BTA, KTA and UA (PSNR and SSIM) and the method's wall time.

    Args:
        method: the method's name.
        predictor: see :func:`evaluate_reconstruction`.
        retain_test: retain-domain test samples (BTA).
        forget_test: forget-domain test samples (KTA).
        forget_train: the forget training samples (UA).
        seconds: wall time of the method (RTE).
        batch_size: evaluation batch size.

    Returns:
        A dict with the keys of :data:`TABLE_COLUMNS`.
    """
    sets = {"retain_test": retain_test, "forget_test": forget_test, "forget_train": forget_train}
    row: dict[str, Any] = {"method": str(method)}
    for prefix, name in _SETS.items():
        scores = evaluate_reconstruction(predictor, sets[name], batch_size=batch_size)
        row[f"{prefix}_{PSNR}"] = scores[PSNR]
        row[f"{prefix}_{SSIM}"] = scores[SSIM]
    row["seconds"] = float(seconds)
    return {key: row[key] for key in TABLE_COLUMNS}


def unlearning_table(
    predictors: Mapping[str, Predictor],
    seconds: Mapping[str, float],
    retain_test: Sequence[Mapping[str, Any]],
    forget_test: Sequence[Mapping[str, Any]],
    forget_train: Sequence[Mapping[str, Any]],
    batch_size: int = EVAL_BATCH_SIZE,
) -> list[dict[str, Any]]:
    """The BTA / KTA / UA table of several methods (one :func:`unlearning_row` each, in the given order).

    Raises:
        ConfigError: if a method has no wall time in ``seconds``.
    """
    missing = [m for m in predictors if m not in seconds]
    if missing:
        raise ConfigError(f"No wall time for method(s) {missing}; pass seconds for every predictor.")
    return [
        unlearning_row(m, p, retain_test, forget_test, forget_train, seconds[m], batch_size)
        for m, p in predictors.items()
    ]
