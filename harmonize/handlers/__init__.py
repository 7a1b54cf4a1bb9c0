"""MONAI engine handlers that add the papers' training behaviours to an ordinary ``SupervisedTrainer``."""

from harmonize.handlers.alternating_confusion import AlternatingConfusion
from harmonize.handlers.batch_norm_recalibration import BatchNormRecalibrationHandler
from harmonize.handlers.conditional_prior import ConditionalPrior
from harmonize.handlers.confound import Confound, quantile_bin_edges
from harmonize.handlers.domain_unlearning import DomainUnlearningHandler
from harmonize.handlers.evidence_gate import EvidenceGate
from harmonize.handlers.finite_loss import StopOnNonFiniteLoss
from harmonize.handlers.head_refit import RefitHeads
from harmonize.handlers.head_warmup import HeadWarmup
from harmonize.handlers.machine_unlearning import MachineUnlearningHandler
from harmonize.handlers.reconstruction_metrics import ReconstructionMetricsHandler
from harmonize.handlers.rigid_augmentation import RandomRigidAugmentation
from harmonize.handlers.sample_mask import LabelRangeMask, SharedRangeMask
from harmonize.handlers.task_collapse_guard import TaskCollapseGuard
from harmonize.handlers.training_checkpoint import TrainingCheckpoint
from harmonize.handlers.unlearning_adversary import HeadSteps
from harmonize.handlers.unlearning_objective import (
    ConfusionObjective,
    GradientReversalObjective,
)

__all__ = [
    "AlternatingConfusion",
    "BatchNormRecalibrationHandler",
    "ConditionalPrior",
    "Confound",
    "ConfusionObjective",
    "DomainUnlearningHandler",
    "EvidenceGate",
    "GradientReversalObjective",
    "HeadSteps",
    "HeadWarmup",
    "LabelRangeMask",
    "MachineUnlearningHandler",
    "RandomRigidAugmentation",
    "ReconstructionMetricsHandler",
    "RefitHeads",
    "SharedRangeMask",
    "StopOnNonFiniteLoss",
    "TaskCollapseGuard",
    "TrainingCheckpoint",
    "quantile_bin_edges",
]
