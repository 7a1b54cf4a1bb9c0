"""Membership inference: can a model's losses tell the subjects it trained on from subjects it never saw?

A model fits its training subjects better than unseen ones. A loss-threshold attack (Yeom et al., "Privacy Risk in
Machine Learning: Analyzing the Connection to Overfitting", CSF 2018) exploits that with no shadow model: it calls
a subject a *member* when the model's loss on it is low. Its power over all thresholds is the area under the ROC
curve of the score ``-loss`` separating members (label 1) from non-members (label 0):

- 0.5: the losses of the two groups are indistinguishable (what a model retrained without the members gives);
- above 0.5: the members are still fitted better, so the model still remembers them;
- below 0.5: the members are fitted *worse* than unseen subjects, which is itself a trace (the Streisand effect
  of gradient ascent pushed too far).

After machine unlearning, the members are the withdrawn (forgotten) training subjects and the non-members are
held-out subjects of the same sites; a successful unlearning brings the AUC to where the oracle's is.
:func:`membership_inference` gives the AUC with a stratified bootstrap interval (members and non-members resampled
separately, so every replicate keeps both groups).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harmonize import defaults
from harmonize.errors import ConfigError, integer_problem, number_problem, raise_problems
from harmonize.io import atomic_write

__all__ = ["MembershipResult", "membership_auc", "membership_inference", "membership_plot"]

#: Fewest subjects per group for an AUC (with one the ROC curve has a single step).
MIN_GROUP = 2


@dataclass
class MembershipResult:
    """The loss-threshold attack's figures.

    Attributes:
        auc: area under the ROC curve of ``-loss`` separating members from non-members.
        auc_ci: ``[low, high]`` bootstrap interval of the AUC (``None`` without bootstrap replicates).
        confidence: the interval's level.
        n_members: members scored.
        n_nonmembers: non-members scored.
        member_loss: mean loss of the members.
        nonmember_loss: mean loss of the non-members.
        bootstrap: bootstrap replicates drawn.
    """

    auc: float
    auc_ci: list[float] | None
    confidence: float
    n_members: int
    n_nonmembers: int
    member_loss: float
    nonmember_loss: float
    bootstrap: int

    def to_dict(self, prefix: str = "mia_") -> dict[str, Any]:
        """The figures as a flat dictionary with keys ``<prefix><name>`` (``mia_auc``, ``mia_auc_ci``, ...)."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def _losses(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float).reshape(-1)
    if array.size < MIN_GROUP:
        raise ConfigError(
            f"membership_inference: '{name}' has {array.size} loss(es); the attack needs at least {MIN_GROUP} "
            "subjects in each group (withdraw more subjects, or give more held-out scans of their sites)."
        )
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ConfigError(
            f"membership_inference: '{name}' holds {bad.size} non-finite loss(es) (first at position {int(bad[0])}); "
            "a NaN or Inf loss means the model or the subject's scan is broken: check them before auditing."
        )
    return array


def membership_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the score ``-loss`` for members (1) against non-members (0): the Mann-Whitney statistic, ties 1/2."""
    members = np.asarray(member_losses, dtype=float).reshape(-1, 1)
    others = np.asarray(nonmember_losses, dtype=float).reshape(1, -1)
    wins = (members < others).sum() + 0.5 * (members == others).sum()
    return float(wins / (members.size * others.size))


def membership_inference(
    member_losses: Sequence[float] | np.ndarray,
    nonmember_losses: Sequence[float] | np.ndarray,
    bootstrap: int = defaults.MIA_BOOTSTRAP,
    confidence: float = defaults.MIA_CONFIDENCE,
    seed: int = defaults.SEED,
) -> MembershipResult:
    """The loss-threshold membership-inference attack: AUC with a stratified bootstrap percentile interval.

    Args:
        member_losses: the model's loss on each member (e.g. each withdrawn training subject), lower = better fit.
        nonmember_losses: its loss on each non-member (held-out subjects of the same sites).
        bootstrap: bootstrap replicates of the interval (0: no interval).
        confidence: level of the interval, in (0, 1).
        seed: seed of the bootstrap.

    Returns:
        The AUC, its interval and the groups' sizes and mean losses.

    Raises:
        ConfigError: fewer than two losses in a group, a non-finite loss, or a setting out of range.

    Examples:
        >>> r = membership_inference([0.1, 0.2, 0.3], [0.4, 0.5, 0.6], bootstrap=0)
        >>> r.auc
        1.0
    """
    raise_problems("membership_inference", [integer_problem("bootstrap", bootstrap, minimum=0),
                                            number_problem("confidence", confidence, maximum=1, strict_maximum=True)])
    members = _losses("member_losses", member_losses)
    others = _losses("nonmember_losses", nonmember_losses)
    auc = membership_auc(members, others)
    interval = None
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        replicates = np.empty(int(bootstrap))
        for b in range(int(bootstrap)):
            m = members[rng.integers(0, members.size, members.size)]
            o = others[rng.integers(0, others.size, others.size)]
            replicates[b] = membership_auc(m, o)
        tail = (1 - confidence) / 2
        interval = [float(np.quantile(replicates, tail)), float(np.quantile(replicates, 1 - tail))]
    return MembershipResult(
        auc=auc, auc_ci=interval, confidence=float(confidence), n_members=int(members.size),
        n_nonmembers=int(others.size), member_loss=float(members.mean()), nonmember_loss=float(others.mean()),
        bootstrap=int(bootstrap),
    )



def membership_plot(
    metrics: Mapping[str, Mapping[str, Any]], losses: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike,
    loss_label: str = "loss (age error, years)",
) -> Path:
    """Per model: the attack's AUC with its interval (0.5 dashed), and the members' and non-members' losses.

    Args:
        metrics: by model, dictionaries with ``mia_auc`` and ``mia_auc_ci`` (:meth:`MembershipResult.to_dict`).
        losses: by model, ``{"member": array, "nonmember": array}``.
        path: the PNG to write (atomically).
        loss_label: the axis label of the losses.

    Raises:
        ConfigError: no model given.
    """
    from matplotlib.figure import Figure

    from harmonize.audit.plots import DPI, PANEL_SIZE, interval_errors

    if not metrics:
        raise ConfigError("membership_plot: no model given.")
    names = list(metrics)
    fig = Figure(figsize=(2 * PANEL_SIZE[0], PANEL_SIZE[1]), dpi=DPI, layout="constrained")
    auc_ax, loss_ax = fig.subplots(1, 2)
    heights = [float(metrics[n]["mia_auc"]) for n in names]
    auc_ax.bar(range(len(names)), heights, color="0.6")
    errors = interval_errors(heights, [metrics[n].get("mia_auc_ci") for n in names])
    if errors is not None:
        auc_ax.errorbar(range(len(names)), heights, yerr=errors, fmt="none", ecolor="0.15", capsize=4)
    auc_ax.axhline(0.5, color="0.3", linestyle="--", linewidth=1, label="0.5 (indistinguishable)")
    auc_ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize="small")
    auc_ax.set_ylim(0, 1.05)
    auc_ax.set_ylabel("AUC")
    auc_ax.set_title("Membership-inference AUC", fontsize="medium")
    auc_ax.legend(fontsize="x-small")
    data, positions, colours = [], [], []
    for i, name in enumerate(names):
        for j, (group, colour) in enumerate((("member", "tab:red"), ("nonmember", "tab:blue"))):
            data.append(np.asarray(losses[name][group], dtype=float))
            positions.append(3 * i + j)
            colours.append(colour)
    boxes = loss_ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True, showfliers=False)
    for patch, colour in zip(boxes["boxes"], colours):
        patch.set_facecolor(colour)
        patch.set_alpha(0.5)
    loss_ax.set_xticks([3 * i + 0.5 for i in range(len(names))], names, rotation=20, ha="right", fontsize="small")
    loss_ax.set_ylabel(loss_label)
    loss_ax.set_title("Withdrawn (red) vs held-out (blue)", fontsize="medium")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
