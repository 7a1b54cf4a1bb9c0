"""What ``harmonize forget`` measures of a model: its task error and whether it still remembers the withdrawn.

:func:`measure_model` gives, for the original, an unlearned model or the oracle:

- the age error on the retained training scans, on the withdrawn scans and on the held-out (val/test) scans;
- the site probe of the held-out scans' features (:func:`~harmonize.workflows.audit.audit_held_out`);
- a membership-inference audit (:func:`~harmonize.audit.membership.membership_inference`): the loss-threshold
  attack's AUC separating the withdrawn subjects from held-out subjects of the same sites, with its bootstrap
  interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harmonize.audit.membership import membership_inference
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys, Split
from harmonize.workflows.brain_age import BrainAgeModel, brain_age_features
from harmonize.workflows.forget_settings import ForgetSettings

__all__ = ["measure_model"]


def _errors(model: BrainAgeModel, rows: pd.DataFrame) -> np.ndarray:
    """Absolute age error (years) of each of ``rows``' scans, in their order."""
    fs = brain_age_features(model, rows, splits=tuple(rows[Keys.SPLIT].unique()))
    order = {str(s): i for i, s in enumerate(fs.meta[Keys.SUBJECT_ID])}
    pred = fs.predictions.reshape(-1)
    error = np.abs(pred - fs.meta[Keys.AGE].astype(float))
    return np.array([error[order[str(s)]] for s in rows[Keys.SUBJECT_ID]])


def measure_model(
    model: BrainAgeModel, frame: pd.DataFrame, flags: pd.Series, settings: ForgetSettings
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The figures of one model: age errors, site probe and membership inference (see the module docstring).

    Returns:
        ``(metrics, losses)``: ``metrics`` holds ``retain_mae``, ``forget_mae``, ``age_mae`` (held-out),
        ``site_probe_bacc``, ``chance`` and the rest of :func:`~harmonize.workflows.audit.audit_held_out`'s figures,
        and the ``mia_*`` figures of :class:`~harmonize.audit.membership.MembershipResult`; ``losses`` the members'
        and non-members' errors (``member``, ``nonmember``).

    Raises:
        HarmonizeError: no held-out scan of the withdrawn subjects' sites.
    """
    from harmonize.workflows.audit import audit_held_out

    train = frame.loc[flags.index]
    forgotten = train.loc[flags]
    sites = set(forgotten[Keys.SITE].astype(str))
    held = frame[frame[Keys.SPLIT].isin([str(Split.VAL), str(Split.TEST)]) & frame[Keys.SITE].astype(str).isin(sites)]
    if len(held) < 2:
        raise HarmonizeError(
            f"The manifest has {len(held)} held-out (val/test) scan(s) of the withdrawn subjects' sites "
            f"{sorted(sites)}: "
            "the membership-inference audit compares the withdrawn subjects with at least 2 held-out subjects of "
            "the same sites. Add val/test rows of those sites."
        )
    metrics, _ = audit_held_out(model, frame, permutations=settings.permutations, seed=settings.seed)
    member, nonmember = _errors(model, forgotten), _errors(model, held)
    metrics["retain_mae"] = float(np.mean(_errors(model, train.loc[~flags])))
    metrics["forget_mae"] = float(np.mean(member))
    result = membership_inference(member, nonmember, bootstrap=settings.bootstrap, seed=settings.seed)
    metrics.update(result.to_dict())
    return metrics, {"member": member, "nonmember": nonmember}

