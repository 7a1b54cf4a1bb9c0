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
            "redoes what changed. Sites without training scans use landmarks pooled over all training sites. "
            "--jobs N shares the scans among N processes (the same bytes as one). For a job array: --fit-only once, "
            "then --shard K/N for K = 1..N (at once, into the same --out), then --merge (docs/scale.md)."
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
    parser.add_argument("--jobs", type=options.JOBS, default=1, metavar="N",
                        help="worker processes that share the scans (default 1); the outputs are the same bytes")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--fit-only", action="store_true",
                       help="job arrays, step 1: preprocess the training scans and fit every site's landmarks, once")
    steps.add_argument("--shard", type=_shard, metavar="K/N",
                       help="job arrays, step 2: preprocess the K-th of N blocks of rows (K from 1, e.g. "
                            "$SLURM_ARRAY_TASK_ID/N) with the fitted landmarks; shards run at once into the same --out")
    steps.add_argument("--merge", action="store_true",
                       help="job arrays, step 3: check that every shard finished (a missing one is named) and write "
                            "manifest.csv")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def _shard(text: str) -> object:
    """argparse ``type=`` of ``--shard K/N``."""
    from harmonize.data.preprocess import Shard
    from harmonize.errors import ConfigError

    try:
        return Shard.parse(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(err.message.replace("Argument 'shard' ", "")) from None


def run(args: argparse.Namespace) -> int:
    """Run the preprocessing (or one step of a sharded run) and log a short summary; return 0."""
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest

    config = PreprocessConfig(target_spacing=args.spacing, target_shape=tuple(args.shape))
    result = preprocess_manifest(args.manifest, args.out, config, overwrite=args.overwrite,
                                 progress=not args.no_progress, bids_derivatives=args.bids_derivatives,
                                 jobs=args.jobs, fit_only=args.fit_only, shard=args.shard, merge=args.merge)
    logger.info("%s", result.format())
    return 0
