"""MONAI engine handlers that add the papers' training behaviours to an ordinary ``SupervisedTrainer``."""

from harmonize.handlers.confound import Confound, quantile_bin_edges
from harmonize.handlers.domain_unlearning import DomainUnlearningHandler
from harmonize.handlers.machine_unlearning import MachineUnlearningHandler
from harmonize.handlers.sample_mask import LabelRangeMask

__all__ = [
    "Confound",
    "DomainUnlearningHandler",
    "LabelRangeMask",
    "MachineUnlearningHandler",
    "quantile_bin_edges",
]
