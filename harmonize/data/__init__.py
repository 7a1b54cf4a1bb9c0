"""Data: the embedded synthetic cohort, MNI templates, TorchIO transforms, manifests and datasets."""

from harmonize.data.synth import (
    SiteProfile,
    SynthConfig,
    draw_site_profiles,
    generate_cohort,
    tissue_labels,
)
from harmonize.data.templates import TISSUE_NAMES, Templates, load_templates

__all__ = [
    "TISSUE_NAMES",
    "SiteProfile",
    "SynthConfig",
    "Templates",
    "draw_site_profiles",
    "generate_cohort",
    "load_templates",
    "tissue_labels",
]
