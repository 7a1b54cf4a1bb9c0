"""MRI reconstruction data for machine unlearning (Xue et al., "Erase to Enhance"): k-space, masks, sets.

- :mod:`~harmonize.recon.kspace`: magnitude slice <-> (multi-coil) k-space with MONAI's centred FFTs.
- :mod:`~harmonize.recon.coil_maps`: smooth simulated coil sensitivities.
- :mod:`~harmonize.recon.undersample`: Cartesian masks (MONAI's equispaced / random) and zero-filling.
- :mod:`~harmonize.recon.brain_volumes`: synthetic brain scans from the MNI T1 template (retain domain).
- :mod:`~harmonize.recon.phantoms`: Shepp-Logan and random-ellipsoid phantoms (forget domain).
- :mod:`~harmonize.recon.slices`: retain/forget x train/test sample sets for the two scenarios.
- :mod:`~harmonize.recon.fastmri`: fastMRI HDF5 files as the same samples.
- :mod:`~harmonize.recon.magnitude_input`: checks of a user's magnitude image before bundle inference.
"""

from harmonize.recon.brain_volumes import (
    BrainWarp,
    axial_slab,
    brain_volume,
    random_brain_warp,
)
from harmonize.recon.coil_maps import simulate_coil_maps
from harmonize.recon.fastmri import (
    FastMRISliceDataset,
    fastmri_splits,
    read_fastmri_volume,
)
from harmonize.recon.kspace import SimulateKspaced, image_to_kspace, kspace_to_image
from harmonize.recon.magnitude_input import CheckMagnitudeImaged
from harmonize.recon.phantoms import (
    Ellipsoid,
    ellipse_slice,
    ellipsoid_volume,
    phantom_volume,
    random_ellipsoids,
    shepp_logan,
    shepp_logan_volume,
)
from harmonize.recon.slices import (
    KspaceSettings,
    ReconSplits,
    anatomy_shift_splits,
    central_axial_slices,
    manifest_groups,
    site_forget_splits,
    volume_items,
)
from harmonize.recon.undersample import (
    RestoreScaled,
    UndersampleKspaced,
    UndersampleVolumed,
    apply_kspace_mask,
    check_undersampling,
)

__all__ = [
    "BrainWarp",
    "CheckMagnitudeImaged",
    "Ellipsoid",
    "FastMRISliceDataset",
    "KspaceSettings",
    "ReconSplits",
    "RestoreScaled",
    "SimulateKspaced",
    "UndersampleKspaced",
    "UndersampleVolumed",
    "anatomy_shift_splits",
    "apply_kspace_mask",
    "axial_slab",
    "brain_volume",
    "central_axial_slices",
    "check_undersampling",
    "ellipse_slice",
    "ellipsoid_volume",
    "fastmri_splits",
    "image_to_kspace",
    "kspace_to_image",
    "manifest_groups",
    "phantom_volume",
    "random_brain_warp",
    "random_ellipsoids",
    "read_fastmri_volume",
    "shepp_logan",
    "shepp_logan_volume",
    "simulate_coil_maps",
    "site_forget_splits",
    "volume_items",
]
