"""Per-site TorchIO preprocessing of a manifest's scans, with a content-addressed cache.

Every image goes through the same spatial steps, then an intensity standardisation fitted **per site**:

1. ``tio.ToCanonical``: reorient to RAS+.
2. ``tio.Resample``: resample to the target voxel size (linear for images, nearest neighbour for labels, which
   TorchIO does for every ``LabelMap``).
3. Foreground mask (:func:`foreground_mask`): for a T1 with a dark background, voxels above Otsu's threshold,
   the largest connected component, holes filled (the dark CSF inside the head stays in the mask);
   ``MaskMethod.NONZERO`` takes every non-zero voxel, for images already skull-stripped.
4. ``tio.CropOrPad``: to the target shape, centred on the mask's bounding box (``crop_to_mask``) so that a
   field of view with much neck or air keeps the head. Voxels brighter than :data:`~.steps.OUTLIER_FACTOR` times the
   head's 99.5th percentile (a spike, an artefact) are clipped to that value, with a warning.
5. ``tio.HistogramStandardization`` with landmarks trained (``HistogramStandardization.train``) on the
   foreground of the site's **training** scans only (Nyul & Udupa 2000), then ``tio.ZNormalization`` within
   the mask, so the foreground of every scan has mean 0 and standard deviation 1; the background is set to 0.

Each scan's outputs are checked before they are written: a NaN or infinite voxel (in the input as stored, or
after any step), a mask of fewer than :data:`~.steps.MIN_MASK_VOXELS` voxels, a label value outside the tissue classes,
or landmarks that are not finite and increasing fail that scan by name. Inputs are checked by
:func:`~harmonize.data.manifest.header_problems` first (3D, orientation, voxel size, a header claiming more
voxels than the file holds), and a manifest listing one image twice is refused.

Validation and test scans never influence the landmarks. A site with no training scan (an unseen site,
which the audit evaluates) cannot have landmarks of its own: its scans are standardised with landmarks
pooled over every training scan of every site, and a warning is logged.

Parallel and sharded runs: ``jobs`` worker processes share a run's scans (:mod:`.pool`), with outputs
byte-identical to one process. For a scheduler's job array, the landmarks are fitted once (``fit_only``), the
shards (``shard="K/N"``) then process their blocks of rows into the same folder, and ``merge`` writes the
manifest (:mod:`.shards`).

The modules: :mod:`.config` (settings, result), :mod:`.steps` (the per-scan steps, shared with the bundles),
:mod:`.stages` (each scan's cached spatial and intensity stage), :mod:`.landmarks` (per-site landmarks and the fit
record), :mod:`.layout` (the output folder), :mod:`.pool` (worker processes), :mod:`.passes` (a stage over many
scans), :mod:`.shards` (fit, shards, merge) and :mod:`.run` (:func:`preprocess_manifest`).

The output folder's layout is described in :mod:`.layout`, the cache in :mod:`.stages`: a second run does no
work, changing a setting redoes what depends on it, and an interrupted run is safe: every file is written to a
temporary file and renamed (:func:`harmonize.io.atomic_write`), and a record is written only after its files, so a
file without a matching record is never trusted.
"""

from harmonize.data.preprocess.config import PreprocessConfig, PreprocessResult
from harmonize.data.preprocess.landmarks import FitMismatchError
from harmonize.data.preprocess.layout import (
    CACHE_DIR,
    FIT_FILENAME,
    IMAGES_DIR,
    LABELS_DIR,
    LANDMARKS_DIR,
    LANDMARKS_INDEX_FILENAME,
    MANIFEST_FILENAME,
    MARKER_FILENAME,
    MARKER_TOOL,
    MASKS_DIR,
    PIPELINE_VERSION,
    SHARDS_DIR,
    SPATIAL_DIR,
)
from harmonize.data.preprocess.run import preprocess_manifest
from harmonize.data.preprocess.shards import Shard, ShardError
from harmonize.data.preprocess.steps import (
    foreground_mask,
    intensity_steps,
    spatial_steps,
)

__all__ = [
    "CACHE_DIR",
    "FIT_FILENAME",
    "IMAGES_DIR",
    "LABELS_DIR",
    "LANDMARKS_DIR",
    "LANDMARKS_INDEX_FILENAME",
    "MANIFEST_FILENAME",
    "MARKER_FILENAME",
    "MARKER_TOOL",
    "MASKS_DIR",
    "PIPELINE_VERSION",
    "SHARDS_DIR",
    "SPATIAL_DIR",
    "FitMismatchError",
    "PreprocessConfig",
    "PreprocessResult",
    "Shard",
    "ShardError",
    "foreground_mask",
    "intensity_steps",
    "preprocess_manifest",
    "spatial_steps",
]
