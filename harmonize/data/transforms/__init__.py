"""TorchIO transforms of harmonize: each a deterministic core ``X`` plus its random sampler ``RandomX``."""

from harmonize.data.transforms.atrophy import Atrophy
from harmonize.data.transforms.deformation import Deformation
from harmonize.data.transforms.random_atrophy import RandomAtrophy
from harmonize.data.transforms.random_deformation import RandomDeformation
from harmonize.data.transforms.random_site_acquisition import RandomSiteAcquisition
from harmonize.data.transforms.site_acquisition import SiteAcquisition

__all__ = [
    "Atrophy",
    "Deformation",
    "RandomAtrophy",
    "RandomDeformation",
    "RandomSiteAcquisition",
    "SiteAcquisition",
]
