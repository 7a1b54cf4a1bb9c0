"""``harmonize preprocess``: reorient, resample, crop and standardise a manifest's scans per site."""

from __future__ import annotations

import argparse
import logging

from harmonize import defaults
from harmonize.cli import options

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``preprocess`` subcommand."""
    parser = subparsers.add_parser(
        "preprocess",
        help="preprocess a manifest's scans (RAS, resample, crop/pad, per-site intensity standardisation)",
        description=(
            "Reorient every scan to RAS, resample it to SPACING mm, crop/pad it to SHAPE around its foreground, "
            "and standardise its intensities with histogram landmarks trained on its site's training scans, "
            "then z-normalise within the foreground. Writes the images, labels, masks, landmarks and a new "
            "manifest.csv into --out. Outputs are cached by input content and settings: a second run only "
            "redoes what changed. Sites without training scans use landmarks pooled over all training sites."
        ),
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="the input manifest CSV (never modified)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: new, empty, or the output of an earlier run (its cache is reused)")
    parser.add_argument("--spacing", type=options.SPACING, default=defaults.TARGET_SPACING, metavar="MM",
                        help=f"isotropic voxel size after resampling, in mm (default {defaults.TARGET_SPACING})")
    parser.add_argument("--shape", type=options.SHAPE, nargs=3, default=list(defaults.TARGET_SHAPE), metavar=("X", "Y", "Z"),
                        help="shape after crop/pad, in voxels (default %s)" % " ".join(map(str, defaults.TARGET_SHAPE)))
    parser.add_argument("--overwrite", action="store_true",
                        help="remove the files harmonize wrote in --out and recompute every scan; other files are "
                             "kept, or refused by name where outputs go (images/, labels/, masks/, spatial/, "
                             "landmarks/, cache/, manifest.csv, preprocess.json)")
    parser.add_argument("--bids-derivatives", action="store_true",
                        help="also write a BIDS-Derivatives dataset into OUT/derivatives/harmonize (for a manifest "
                             "from 'harmonize manifest from-bids'); the new manifest points at it")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the preprocessing and log a short summary; return 0."""
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest

    config = PreprocessConfig(target_spacing=args.spacing, target_shape=tuple(args.shape))
    result = preprocess_manifest(args.manifest, args.out, config, overwrite=args.overwrite,
                                 progress=not args.no_progress, bids_derivatives=args.bids_derivatives)
    logger.info("%s", result.format())
    return 0
