"""Workflows: build trainers and handlers from settings, in one place used by the demo, CLI, bundles and benchmarks.

- :mod:`~harmonize.workflows.machine_unlearning`: unlearning methods (FT, GA, GA-L1, NL and their FT
  variants, the oracle) as ``SupervisedTrainer`` stages with
  :class:`~harmonize.handlers.MachineUnlearningHandler`; model-agnostic.
- :mod:`~harmonize.workflows.recon_unlearning`: the reconstruction-unlearning experiment of Xue et al.
"""

from harmonize.workflows.machine_unlearning import (
    MachineUnlearningSettings,
    PrepareBatchKeys,
    Stopwatch,
    load_model,
    reinitialised_copy,
    run_unlearning,
    train_stage,
)
from harmonize.workflows.recon_unlearning import (
    ReconUnlearningResult,
    ReconUnlearningSettings,
    run_recon_unlearning,
)

__all__ = [
    "MachineUnlearningSettings",
    "PrepareBatchKeys",
    "ReconUnlearningResult",
    "ReconUnlearningSettings",
    "Stopwatch",
    "load_model",
    "reinitialised_copy",
    "run_recon_unlearning",
    "run_unlearning",
    "train_stage",
]
