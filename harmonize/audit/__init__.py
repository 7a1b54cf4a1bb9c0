"""Audits of a trained network: can the scanner still be read from its features, and is the biology kept?

- :mod:`~harmonize.audit.features`: run a network over a dataset and collect predictions and tapped features.
- :mod:`~harmonize.audit.held_out`: which scans an audit reads, and the audit every task shares
  (:func:`~harmonize.audit.held_out.audit_held_out_scans`, with a per-task
  :class:`~harmonize.audit.held_out.TaskAudit` adapter).
- :mod:`~harmonize.audit.probe`: cross-validated classifier and regressor probes on features.
- :mod:`~harmonize.audit.feature_probes`: the site, age and sex probes every audit runs, with the site probe's
  biology floor.
- :mod:`~harmonize.audit.age_audit`: the brain-age figures of held-out scans (age error, site bias, probes).
- :mod:`~harmonize.audit.combat`: ComBat (neuroHarmonize), the baseline researchers know.
- :mod:`~harmonize.audit.plots` and :mod:`~harmonize.audit.report`: figures, tables and the HTML report.

The submodules that need matplotlib or neuroHarmonize are imported on first use, not here.
"""

from harmonize.audit.feature_probes import biology_covariates, feature_probes
from harmonize.audit.features import FeatureSet, collect_features
from harmonize.audit.probe import (
    ClassifierProbeResult,
    RegressorProbeResult,
    classifier_probe,
    regressor_probe,
)

__all__ = [
    "ClassifierProbeResult",
    "FeatureSet",
    "RegressorProbeResult",
    "biology_covariates",
    "classifier_probe",
    "collect_features",
    "feature_probes",
    "regressor_probe",
]
