"""Networks of scanner unlearning (plain PyTorch + MONAI; no engines, no files).

A network for unlearning is a feature extractor + task head, plus a :class:`DomainHead` that reads features
taken from named submodules by :class:`FeatureTaps`. Each task network lists its tap points in ``TAPS``
(tap name -> submodule name) and their sizes in ``tap_channels``.

- :class:`BrainAgeRegressor`: VGG-like 2D/3D encoder (tap ``encoder``) and 96-32-1 regressor.
- :class:`TissueSegmenter`: U-Net for background/CSF/GM/WM (taps ``bottleneck`` and ``final``).
- :class:`DomainHead`: MLP ``in_features -> 32 -> num_classes`` with dropout.
- :class:`ReconUNet`, :class:`ReconVarNet`: MRI reconstruction (residual U-Net; MONAI's VarNet) for
  machine unlearning (Xue et al.).
"""

from harmonize.networks.age_regressor import BrainAgeRegressor
from harmonize.networks.batch_norm import recalibrate_batchnorm
from harmonize.networks.domain_head import DomainHead
from harmonize.networks.feature_taps import FeatureTaps, pool_features
from harmonize.networks.output_refit import refit_output_layer
from harmonize.networks.reconstruction import ReconUNet, ReconVarNet
from harmonize.networks.segmentation import TissueSegmenter
from harmonize.networks.unwrap_network import unwrap_network

__all__ = [
    "BrainAgeRegressor",
    "DomainHead",
    "FeatureTaps",
    "ReconUNet",
    "ReconVarNet",
    "TissueSegmenter",
    "pool_features",
    "recalibrate_batchnorm",
    "refit_output_layer",
    "unwrap_network",
]
