"""The trained models a workflow returns and an audit reads: :class:`BrainAgeModel` and :class:`SegmentationModel`.

A leaf module: it imports no other workflow at run time, so training, saving, loading and auditing all depend on it
and not on each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from harmonize import defaults
from harmonize.data.site_index import CategoryIndex
from harmonize.keys import Method

if TYPE_CHECKING:
    from harmonize.handlers import DomainUnlearningHandler
    from harmonize.networks import BrainAgeRegressor
    from harmonize.workflows.brain_age import BrainAgeSettings

__all__ = ["BrainAgeModel", "SegmentationModel"]


@dataclass
class BrainAgeModel:
    """A trained brain-age network with what is needed to evaluate or resume it."""

    network: BrainAgeRegressor
    handler: DomainUnlearningHandler | None
    settings: BrainAgeSettings
    site_index: CategoryIndex
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    #: MONAI dictionary transform applied to every loaded scan before the network (a bundle's ``transforms``,
    #: e.g. intensity normalisation); ``None``: the scans as the manifest gives them, as ``train_brain_age`` trains.
    transform: Callable[[Mapping[str, Any]], Any] | None = None
    #: The training scans' grid and intensity preprocessing (:func:`~harmonize.workflows.input_check.describe_inputs`),
    #: checked against the scans an audit is given; ``None``: unknown (not checked).
    inputs: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        """How it was trained (``none``, ``unlearning``, ``dann``), as a segmentation model states it."""
        return str(self.settings.unlearning.method)

    @property
    def taps(self) -> tuple[str, ...]:
        """The layers its domain heads read and its audit probes."""
        return self.settings.taps



@dataclass
class SegmentationModel:
    """A trained tissue-segmentation network with what its audit needs (e.g. from a MONAI bundle).

    Attributes:
        network: the segmenter (logits ``(batch, classes, *spatial)``, class 0 the background).
        site_index: the sites it was trained on (a site it lacks counts as unseen).
        taps: layers whose pooled outputs are probed (those the domain head read).
        method: how it was trained (``none``, ``unlearning``, ``dann``).
        device: where to run it.
        transform: the MONAI dictionary transform the scans were trained with (e.g. intensity normalisation),
            applied after loading; ``None`` for none.
        batch_size: scans per batch of the audit.
        num_workers: data-loader processes that read the scans ahead of the network.
        history: per-epoch training figures of the domain head (empty when unknown).
        seconds: training time (NaN when unknown).
        inputs: the training scans' grid and intensity preprocessing
            (:func:`~harmonize.workflows.input_check.describe_inputs`, or a bundle's ``preprocessing.json`` through
            :func:`~harmonize.workflows.input_check.describe_preprocessing`); ``None`` when unknown. The audit
            refuses scans that differ.
    """

    network: nn.Module
    site_index: CategoryIndex
    taps: tuple[str, ...]
    method: str = Method.NONE
    device: str = "cpu"
    transform: Callable[[Mapping[str, Any]], Any] | None = None
    batch_size: int = defaults.BATCH_SIZE
    num_workers: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = math.nan
    inputs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.taps = (self.taps,) if isinstance(self.taps, str) else tuple(self.taps)
