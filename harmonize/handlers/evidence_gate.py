"""Unlearn only what the features carry: the gate of :class:`~harmonize.handlers.DomainUnlearningHandler`.

Where the features tell nothing of a confound beyond what biology already tells (a balanced design, scanners that do
not reach the features), an adversary has nothing to remove and unlearning can only cost: the extractor is pushed
against noise, and can even learn to encode the confound in another way (docs/unlearning.md, session 12). At the
first unlearning epoch :class:`EvidenceGate` measures, on the features of all training scans, how much better a
probe reads each confound given the covariates (age and sex) than from the covariates alone; a confound below the
margin gets the weight 0 for the rest of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from harmonize.errors import ConfigError, number_problem, raise_problems
from harmonize.handlers.confound import MISSING
from harmonize.handlers.epoch_features import epoch_features
from harmonize.keys import Keys, StateKeys

if TYPE_CHECKING:
    from harmonize.handlers.domain_unlearning import DomainUnlearningHandler

__all__ = ["EvidenceGate"]

logger = logging.getLogger(__name__)

#: ``measure(features, labels, covariates)``: how far (balanced accuracy) the features and covariates read the labels
#: beyond the covariates alone (e.g. :func:`harmonize.audit.feature_probes.evidence_beyond`).
EvidenceMeasure = Callable[[np.ndarray, np.ndarray, Mapping[str, np.ndarray]], float]


class EvidenceGate:
    """Switches off, at the first unlearning epoch, every confound the training features do not carry.

    The decision is kept in the confounds' weights (:attr:`~harmonize.handlers.Confound.weight_scale`, saved with the
    handler), and the measured evidence in the handler's history (``evidence_<confound>``). A confound whose evidence
    cannot be measured (too few scans of a class to cross-validate) keeps its weight.

    Args:
        measure: the evidence of one confound (see :data:`EvidenceMeasure`).
        margin: a confound with evidence below this is not unlearned.
        covariates: batch keys the measure conditions on (a confound is never conditioned on itself).

    Raises:
        ConfigError: a margin outside [0, 1).
    """

    def __init__(self, measure: EvidenceMeasure, margin: float,
                 covariates: Sequence[str] = (Keys.AGE, Keys.SEX)) -> None:
        raise_problems(type(self).__name__, self.problems(margin))
        self.measure, self.margin, self.covariates = measure, float(margin), tuple(str(k) for k in covariates)

    @staticmethod
    def problems(margin: Any) -> list[str | None]:
        """The problem of a margin, named as the settings' field (``evidence_margin``): it must lie in [0, 1)."""
        return [number_problem("evidence_margin", margin, strict=False, maximum=1, strict_maximum=True)]

    def epoch_started(self, unlearner: DomainUnlearningHandler, engine: Any) -> None:
        """At the first unlearning epoch (not on a mid-epoch resume), measure and switch off what is not carried."""
        if engine.state.epoch != unlearner.warmup.epochs + 1:
            return
        gathered = epoch_features(unlearner, engine, self.covariates)
        if gathered is None:
            return
        features, targets, values = gathered
        for confound in unlearner.confounds:
            evidence = self.evidence(features.cpu().numpy(), targets[confound.name].cpu().numpy(),
                                     {k: v.cpu().numpy() for k, v in values.items() if k != confound.key})
            if evidence is None:
                continue
            unlearner.record(f"{StateKeys.EVIDENCE}_{confound.name}", evidence)
            if evidence < self.margin:
                confound.weight_scale = 0.0
                logger.info("epoch %d: the training features tell %s %.3f beyond %s (margin %.3f): it is not "
                            "unlearned", engine.state.epoch, confound.name, evidence,
                            " and ".join(k for k in values if k != confound.key) or "chance", self.margin)

    def evidence(self, features: np.ndarray, labels: np.ndarray, covariates: Mapping[str, np.ndarray]) -> float | None:
        """The measure on the rows with a label and finite covariates; None when it cannot be measured."""
        keep = labels != MISSING
        for v in covariates.values():
            keep &= np.isfinite(v)
        try:
            return float(self.measure(features[keep], labels[keep], {k: v[keep] for k, v in covariates.items()}))
        except ConfigError as err:
            logger.warning("The evidence gate could not measure the features' information (%s); unlearning goes on.",
                           err)
            return None

    def config(self) -> dict[str, Any]:
        """The settings that rebuild the gate (its measure is the builder's)."""
        return {"margin": self.margin, "covariates": list(self.covariates)}
