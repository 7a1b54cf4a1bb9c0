"""Every string key and every choice of the package, in one place.

Batch dictionaries, manifest columns, ``engine.state`` attributes, modes and methods are all named here, so
that data, handlers, bundles and the CLI agree. The enums are :class:`StrEnum`, as :class:`monai.utils.StrEnum`
(without importing MONAI, so that preprocessing workers start quickly), so a member compares equal to its string
value and bundle configs can use plain strings.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "ConfoundKind",
    "DatasetCache",
    "HeldOutSite",
    "Keys",
    "MaskMethod",
    "MaskType",
    "Method",
    "NoiseMode",
    "OverlapMode",
    "PhantomKind",
    "ReconMethod",
    "Sex",
    "SiteSource",
    "Split",
    "StateKeys",
    "Task",
    "UnlearningMode",
    "UnseenSite",
]


class StrEnum(str, Enum):
    """An enum whose members are their string values (``str(member)`` and ``repr(member)`` too), as MONAI's."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return self.value


class Keys(StrEnum):
    """Keys of a sample dictionary, which are also the manifest's column names.

    - ``SUBJECT_ID``: unique id of a scan (manifest column, carried into every sample).
    - ``IMAGE``: the image (path in a manifest, tensor in a batch).
    - ``LABEL``: a segmentation label map (path in a manifest, tensor in a batch).
    - ``SITE``: the scanner or site (string id in a manifest, integer index in a batch).
    - ``AGE``: age in years.
    - ``SEX``: sex (``F``/``M`` in a manifest, 0/1 in a batch).
    - ``SPLIT``: ``train``/``val``/``test``.
    - ``MASK``: a brain (foreground) mask.
    - ``TARGET``: the regression or reconstruction target of a task.
    - ``KSPACE``, ``MASKED_KSPACE``, ``SAMPLING_MASK``: reconstruction inputs.
    - ``FORGET``: boolean manifest column marking the data a model must forget.
    - ``HAS_LABEL``: whether a sample carries a task label (semi-supervised training).
    - ``VOLUME_ID``, ``SLICE_INDEX``: which volume a 2D reconstruction slice comes from, and where (metrics are
      computed per volume, as in fastMRI).
    - ``SCALE``: the factor a reconstruction input was divided by, to put its output back on the input's scale.
    - ``TISSUES``: partial-volume tissue probability maps (CSF, GM, WM channels) of a synthetic subject.
    - ``INTENSITY_REFERENCE``: which intensity landmarks bundle inference standardised a scan with (its site's,
      or the pooled ones for a scanner not seen in training).
    - ``WARNINGS``: warnings about a scan raised by bundle inference ('' if none).
    - ``EVAL_SET``: which evaluation set a reconstruction sample belongs to (``bta``, ``kta``, ``ua``).
    """

    SUBJECT_ID = "subject_id"
    IMAGE = "image"
    LABEL = "label"
    SITE = "site"
    AGE = "age"
    SEX = "sex"
    SPLIT = "split"
    MASK = "mask"
    TARGET = "target"
    KSPACE = "kspace"
    MASKED_KSPACE = "masked_kspace"
    SAMPLING_MASK = "sampling_mask"
    FORGET = "forget"
    HAS_LABEL = "has_label"
    VOLUME_ID = "volume_id"
    SLICE_INDEX = "slice_index"
    SCALE = "scale"
    TISSUES = "tissues"
    INTENSITY_REFERENCE = "intensity_reference"
    WARNINGS = "warnings"
    EVAL_SET = "eval_set"


class Split(StrEnum):
    """Values of the manifest's ``split`` column."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class Sex(StrEnum):
    """Values of the manifest's ``sex`` column (mapped to 0 and 1 in a batch, in this order)."""

    FEMALE = "F"
    MALE = "M"


class StateKeys(StrEnum):
    """Attributes that handlers set on ``engine.state`` (read by StatsHandler, TensorBoard and checkpoints)."""

    TASK_LOSS = "task_loss"
    DOMAIN_LOSS = "domain_loss"
    DOMAIN_ACC = "domain_acc"
    CONFUSION_LOSS = "confusion_loss"
    UNLEARNING_PHASE = "unlearning_phase"
    FORGET_LOSS = "forget_loss"
    RETAIN_LOSS = "retain_loss"
    REFIT_ACC = "refit_acc"
    EVIDENCE = "evidence"


class UnlearningMode(StrEnum):
    """How the confusion of ``method='unlearning'`` updates the extractor (DANN is a :class:`Method`, not a mode).

    - ``ALTERNATING``: the faithful loop of Dinsdale et al.: task step, head step on detached features, then a
      second forward pass whose confusion loss updates the feature extractor only
      (:class:`~harmonize.handlers.AlternatingConfusion`).
    - ``FUSED``: one forward pass; the head steps on the detached features and the confusion gradient is added
      to the task loss before the trainer's own backward pass (:class:`~harmonize.handlers.ConfusionObjective`).
    """

    ALTERNATING = "alternating"
    FUSED = "fused"


class ConfoundKind(StrEnum):
    """A confound is categorical (site, sex) or continuous (age, binned by quantiles for its head)."""

    CATEGORICAL = "categorical"
    CONTINUOUS = "continuous"


class Method(StrEnum):
    """Harmonisation methods compared by the demo (``metrics.json`` keys)."""

    NONE = "none"
    UNLEARNING = "unlearning"
    DANN = "dann"
    COMBAT = "combat"
    ERASURE = "erasure"
    UNLEARNING_ERASURE = "unlearning_erasure"


class ReconMethod(StrEnum):
    """Machine-unlearning methods for reconstruction (Xue et al.), plus the reference models.

    ``RETRAIN_SUBSET`` is a baseline: retrain from scratch on the same retain subset that the FT variants use.
    """

    ORIGINAL = "original"
    ORACLE = "oracle"
    FT = "ft"
    GA = "ga"
    GA_L1 = "ga_l1"
    GA_L1_FT = "ga_l1_ft"
    NL = "nl"
    NL_FT = "nl_ft"
    RETRAIN_SUBSET = "retrain_subset"


class MaskType(StrEnum):
    """Cartesian k-space undersampling patterns."""

    EQUISPACED = "equispaced"
    RANDOM = "random"


class NoiseMode(StrEnum):
    """How noisy labelling (NL, Xue et al.) corrupts the targets of forget samples.

    - ``REPLACE``: the target is replaced by Gaussian noise.
    - ``ADD``: Gaussian noise is added to the target.
    """

    REPLACE = "replace"
    ADD = "add"


class MaskMethod(StrEnum):
    """How preprocessing finds the foreground (head or brain) mask of an image.

    - ``OTSU``: voxels above Otsu's threshold, largest connected component, holes filled (images with a dark,
      near-zero background, e.g. T1).
    - ``NONZERO``: every voxel that is not exactly zero (images already skull-stripped and masked).
    """

    OTSU = "otsu"
    NONZERO = "nonzero"


class DatasetCache(StrEnum):
    """Where a dataset keeps its scans between epochs (:func:`~harmonize.data.dataset.make_dataset`).

    - ``NONE``: nothing is kept; every item is read from disk when the loader asks for it (memory flat in the
      number of scans).
    - ``MEMORY``: MONAI's ``CacheDataset``: scans loaded once and kept in memory (up to a size limit; the rest
      streams).
    - ``DISK``: MONAI's ``PersistentDataset``: scans loaded once and saved to a cache folder, then read from
      there (up to a size limit; the rest streams).
    """

    NONE = "none"
    MEMORY = "memory"
    DISK = "disk"


class PhantomKind(StrEnum):
    """Which phantom a forget-domain volume is: the Shepp-Logan head, random ellipsoids, or either at random."""

    SHEPP_LOGAN = "shepp_logan"
    ELLIPSES = "ellipses"
    MIXED = "mixed"


class OverlapMode(StrEnum):
    """Which subjects the biased-data variant (``overlap_only``) unlearns on.

    - ``ALL``: those in the label range that every training site covers (Dinsdale et al. 2021).
    - ``PAIRS``: those whose label lies in a range their site shares with at least one other site (for sites
      whose ranges overlap only pairwise, e.g. a chain of age windows, where no range is common to all).
    """

    ALL = "all"
    PAIRS = "pairs"


class UnseenSite(StrEnum):
    """What ComBat does with rows of a site it was not fitted on (it cannot estimate that site's effect).

    - ``ERROR``: raise an error naming the unseen and the known sites.
    - ``PASSTHROUGH``: leave those rows unchanged (unharmonised) and log a warning.
    """

    ERROR = "error"
    PASSTHROUGH = "passthrough"


class HeldOutSite(StrEnum):
    """Which site ``harmonize compare`` (and the demo) keeps out of training, to measure an unseen scanner.

    Any other value names the site itself (a value of the manifest's ``site`` column).

    - ``LAST``: the last site in sorted order.
    - ``NONE``: hold no site out (every site is trained on).
    """

    LAST = "last"
    NONE = "none"


class Task(StrEnum):
    """What a network audited by ``harmonize audit`` predicts (the audit's task figures follow it).

    - ``BRAIN_AGE``: one age per scan (age error per site).
    - ``SEGMENTATION``: a tissue label map per scan (Dice per tissue and per site).
    """

    BRAIN_AGE = "brain_age"
    SEGMENTATION = "segmentation"


class SiteSource(StrEnum):
    """Where ``harmonize manifest from-bids`` reads each scan's site (``--site-from SOURCE:FIELDS``).

    - ``PARTICIPANTS``: columns of ``participants.tsv`` (one site per participant).
    - ``SESSIONS``: columns of ``sub-XX/sub-XX_sessions.tsv`` (one site per session).
    - ``SIDECAR``: fields of the scan's JSON sidecar, e.g. ``Manufacturer`` (one site per scan).
    """

    PARTICIPANTS = "participants"
    SESSIONS = "sessions"
    SIDECAR = "sidecar"
