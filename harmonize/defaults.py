"""Default values shared by the library, the CLI and the bundles (one place for each number)."""

from __future__ import annotations

#: Seed used when the user gives none.
SEED = 0

# --- embedded cohort -------------------------------------------------------------------------------------
#: Sites, subjects per site and cubic shape of the embedded cohort made by ``harmonize synth``.
SYNTH_SITES = 4
SYNTH_SUBJECTS_PER_SITE = 40
SYNTH_SHAPE = 64

# --- preprocessing ---------------------------------------------------------------------------------------
#: Isotropic voxel size (mm) after resampling, and the shape after crop/pad (voxels).
TARGET_SPACING = 2.0
TARGET_SHAPE = (96, 112, 96)

# --- unlearning ------------------------------------------------------------------------------------------
#: Weight of the confusion loss (Dinsdale et al. use 10 with a summed loss).
BETA = 10.0
#: Weight of the domain loss.
ALPHA = 1.0
