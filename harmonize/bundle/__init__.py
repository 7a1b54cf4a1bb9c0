"""What the MONAI bundles in ``bundles/`` need beyond the public classes they instantiate by ``_target_``.

- :func:`ensure_embedded_cohort` / :func:`resolve_manifest`: the embedded synthetic cohort, generated and
  preprocessed once into a cache outside the repository, used when a run gives no manifest;
- :func:`make_unlearning_handler`: the domain-unlearning handler from a bundle's ``unlearning`` dict;
- :func:`age_statistics`, :func:`labelled_subjects`: the training ages' scale and the semi-supervised subset;
- :func:`attach_handlers`: attach the unlearning handler, then the others, to a trainer;
- :func:`site_agreement_loss`: the biased_agreement variant's age loss (site fixed effects, agreement between sites);
- :func:`site_balanced_batch_size`: the training batch size for any number of sites (site-balanced batches);
- :func:`inference_dataset`, :class:`AgeCsvWriter`, :class:`SegmentationWriter`: what ``inference.json`` reads
  and writes;
- :func:`save_preprocessing`, :class:`BundlePreprocessd`: the training preprocessing, saved beside the weights
  and replayed (invertibly) on raw scans by ``inference.json``;
- :func:`forget_manifest`, :func:`trained_brain_age_model`, :func:`trained_segmentation_model`: what ``forget.json``
  runs ``harmonize forget`` on;
- :func:`install_error_hook`: a user's mistake in a bundle run is one ``error:`` paragraph, not a traceback;
- :func:`check_overrides`, :func:`run_bundle`: reject overrides of ids a config does not have
  (``harmonize bundle run``); :func:`check_settings`: the numeric ids, checked by the configs' ``initialize``
  (``python -m monai.bundle run`` too);
- :func:`metadata_schema_path`, :func:`verify_bundle_metadata`: verify ``metadata.json`` offline.

The reconstruction bundle's helpers live in :mod:`harmonize.bundle.recon`.
"""

from harmonize.bundle.age_csv_writer import AgeCsvWriter
from harmonize.bundle.age_statistics import age_statistics
from harmonize.bundle.attach_handlers import attach_handlers
from harmonize.bundle.balanced_batch import site_balanced_batch_size
from harmonize.bundle.check_overrides import check_overrides, config_ids
from harmonize.bundle.check_settings import check_settings
from harmonize.bundle.embedded_cohort import (
    default_cache_dir,
    ensure_embedded_cohort,
    resolve_manifest,
)
from harmonize.bundle.error_hook import install_error_hook
from harmonize.bundle.forget import forget_manifest, trained_brain_age_model, trained_segmentation_model
from harmonize.bundle.inference_dataset import inference_dataset
from harmonize.bundle.labelled_subjects import labelled_subjects
from harmonize.bundle.metadata_schema import (
    metadata_schema_path,
    verify_bundle_metadata,
)
from harmonize.bundle.preprocessing import (
    PREPROCESSING_FILENAME,
    BundlePreprocessd,
    load_preprocessing,
    parse_flag,
    save_preprocessing,
)
from harmonize.bundle.run_bundle import parse_overrides, run_bundle
from harmonize.bundle.segmentation_writer import SegmentationWriter
from harmonize.bundle.site_agreement import site_agreement_loss
from harmonize.bundle.tensorboard import EpochScalarWriter, tensorboard_available
from harmonize.bundle.unlearning_handler import (
    make_unlearning_handler,
    unlearning_settings,
)

__all__ = [
    "PREPROCESSING_FILENAME",
    "AgeCsvWriter",
    "BundlePreprocessd",
    "EpochScalarWriter",
    "SegmentationWriter",
    "age_statistics",
    "attach_handlers",
    "check_overrides",
    "check_settings",
    "config_ids",
    "default_cache_dir",
    "ensure_embedded_cohort",
    "forget_manifest",
    "inference_dataset",
    "install_error_hook",
    "labelled_subjects",
    "load_preprocessing",
    "make_unlearning_handler",
    "metadata_schema_path",
    "parse_flag",
    "parse_overrides",
    "resolve_manifest",
    "run_bundle",
    "save_preprocessing",
    "site_agreement_loss",
    "site_balanced_batch_size",
    "tensorboard_available",
    "trained_brain_age_model",
    "trained_segmentation_model",
    "unlearning_settings",
    "verify_bundle_metadata",
]
