"""What ``harmonize forget`` measures of a model: its task error and whether it still remembers the withdrawn.

:func:`measure_model` gives, for the original, an unlearned model or the oracle, of either task:

- the task error on the retained training scans, on the withdrawn scans and on the held-out (val/test) scans: the
  absolute age error of a brain-age model (``retain_mae``, ``forget_mae``, ``age_mae``), the Dice of a segmentation
  model (``retain_dice``, ``forget_dice``, ``mean_dice``; MONAI's ``DiceMetric`` per scan,
  :class:`~harmonize.metrics.DicePerScan`, reduced by
  :func:`~harmonize.workflows.segmentation_audit.dice_summary`);
- the site probe of the held-out scans' features (:func:`~harmonize.workflows.audit.audit_held_out`);
- a membership-inference audit (:func:`~harmonize.audit.membership.membership_inference`): the loss-threshold
  attack's AUC separating the withdrawn subjects from held-out subjects of the same sites, with its bootstrap
  interval. The per-scan loss is the absolute age error of a brain-age model and the Dice + cross-entropy of a
  segmentation model (:func:`~harmonize.workflows.forget_settings.segmentation_loss`, what it forgot with).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from harmonize.audit.membership import membership_inference
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys, Split
from harmonize.metrics.dice_per_scan import DicePerScan
from harmonize.workflows.brain_age import BrainAgeModel, brain_age_features
from harmonize.workflows.forget_settings import ForgetSettings, segmentation_loss
from harmonize.workflows.models import SegmentationModel

__all__ = ["measure_model", "membership_rows", "segmentation_scores"]


def _errors(model: BrainAgeModel, rows: pd.DataFrame) -> np.ndarray:
    """Absolute age error (years) of each of ``rows``' scans, in their order."""
    fs = brain_age_features(model, rows, splits=tuple(rows[Keys.SPLIT].unique()))
    order = {str(s): i for i, s in enumerate(fs.meta[Keys.SUBJECT_ID])}
    pred = fs.predictions.reshape(-1)
    error = np.abs(pred - fs.meta[Keys.AGE].astype(float))
    return np.array([error[order[str(s)]] for s in rows[Keys.SUBJECT_ID]])


def segmentation_scores(model: SegmentationModel, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-scan loss (:func:`~harmonize.workflows.forget_settings.segmentation_loss`) and Dice of ``rows``' scans.

    One forward pass per scan gives both: a :class:`~harmonize.metrics.DicePerScan` hook scores the logits that the
    loss reads.

    Returns:
        ``(losses, dice)`` in the order of ``rows``: ``(n,)`` losses and ``(n, classes - 1)`` Dice per foreground
        class (NaN where the scan lacks that class).

    Raises:
        HarmonizeError: no label maps, or label values outside the network's classes.
    """
    from harmonize.workflows.segmentation_audit import scored_scans

    loader, num_classes = scored_scans(model, rows)
    loss, dice = segmentation_loss(), DicePerScan(num_classes)
    device = torch.device(model.device)
    losses: list[float] = []
    ids: list[str] = []
    model.network.eval()
    hook = model.network.register_forward_hook(dice)
    try:
        with torch.no_grad():
            for batch in dice.batches(loader):
                logits = model.network(torch.as_tensor(batch[Keys.IMAGE]).to(device))
                label = torch.as_tensor(batch[Keys.LABEL]).to(device)
                losses += [float(loss(logits[i : i + 1], label[i : i + 1])) for i in range(logits.shape[0])]
                ids += [str(s) for s in batch[Keys.SUBJECT_ID]]
    finally:
        hook.remove()
    order = {s: i for i, s in enumerate(ids)}
    index = [order[str(s)] for s in rows[Keys.SUBJECT_ID]]
    return np.asarray(losses)[index], torch.cat(dice.scores).numpy()[index]


def membership_rows(frame: pd.DataFrame, flags: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(members, non-members)`` of the audit: the withdrawn training rows, and the held-out rows of their sites.

    Raises:
        HarmonizeError: fewer than 2 held-out (val/test) scans of the withdrawn subjects' sites.
    """
    forgotten = frame.loc[flags.index].loc[flags]
    sites = set(forgotten[Keys.SITE].astype(str))
    held = frame[frame[Keys.SPLIT].isin([str(Split.VAL), str(Split.TEST)]) & frame[Keys.SITE].astype(str).isin(sites)]
    if len(held) < 2:
        raise HarmonizeError(
            f"The manifest has {len(held)} held-out (val/test) scan(s) of the withdrawn subjects' sites "
            f"{sorted(sites)}: "
            "the membership-inference audit compares the withdrawn subjects with at least 2 held-out subjects of "
            "the same sites. Add val/test rows of those sites."
        )
    return forgotten, held


def measure_model(
    model: BrainAgeModel | SegmentationModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The figures of one model: task errors, site probe and membership inference (see the module docstring).

    Returns:
        ``(metrics, losses)``: ``metrics`` holds the task errors (brain age: ``retain_mae``, ``forget_mae``,
        ``age_mae`` (held-out); segmentation: ``retain_dice``, ``forget_dice``, ``mean_dice`` (held-out)),
        ``site_probe_bacc``, ``chance`` and the rest of :func:`~harmonize.workflows.audit.audit_held_out`'s figures,
        and the ``mia_*`` figures of :class:`~harmonize.audit.membership.MembershipResult`; ``losses`` the members'
        and non-members' per-scan losses (``member``, ``nonmember``).

    Raises:
        HarmonizeError: no held-out scan of the withdrawn subjects' sites; for segmentation, scans without label maps.
    """
    from harmonize.workflows.audit import audit_held_out
    from harmonize.workflows.segmentation_audit import dice_summary, tissue_names

    forgotten, held = membership_rows(frame, flags)
    retained = frame.loc[flags.index].loc[~flags]
    metrics, _ = audit_held_out(model, frame, permutations=settings.permutations, seed=settings.seed)
    if isinstance(model, BrainAgeModel):
        member, nonmember = _errors(model, forgotten), _errors(model, held)
        metrics["retain_mae"] = float(np.mean(_errors(model, retained)))
        metrics["forget_mae"] = float(np.mean(member))
    else:
        tissues = tissue_names(int(model.network.out_channels))
        (member, forget_dice), (nonmember, _) = segmentation_scores(model, forgotten), segmentation_scores(model, held)
        metrics["forget_dice"] = dice_summary(forget_dice, tissues)[0]
        metrics["retain_dice"] = dice_summary(segmentation_scores(model, retained)[1], tissues)[0]
    result = membership_inference(member, nonmember, bootstrap=settings.bootstrap, seed=settings.seed)
    metrics.update(result.to_dict())
    return metrics, {"member": member, "nonmember": nonmember}
