"""``harmonize synth``: write the embedded multi-site cohort (images, labels, manifest) into a directory."""

from __future__ import annotations

import argparse
import logging

from harmonize import defaults
from harmonize.cli import options

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Generate a synthetic multi-site T1 cohort with known ground truth from the MNI ICBM152 templates shipped with
nilearn (nothing is downloaded). Each subject gets age-related atrophy (cortical thinning, larger ventricles),
a sex-related head size and an individual smooth shape; each site gets its own age range and scanner
(tissue contrast, contrast curve, resolution, bias field, noise). Writes images/*.nii.gz (float32),
labels/*.nii.gz (0 background, 1 CSF, 2 GM, 3 WM), manifest.csv (subject_id,image,label,site,age,sex,split)
and cohort.json (every generating parameter and the seed). The same seed gives byte-identical files.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth`` subcommand."""
    parser = subparsers.add_parser(
        "synth", help="generate the synthetic multi-site cohort (images, labels, manifest)", description=DESCRIPTION
    )
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (created; must be empty or hold a previous cohort)")
    parser.add_argument("--sites", type=options.number(int, 2, defaults.SYNTH_MAX_SITES), default=defaults.SYNTH_SITES, metavar="N",
                        help=f"number of sites, 2 to {defaults.SYNTH_MAX_SITES} (default {defaults.SYNTH_SITES})")
    parser.add_argument("--subjects-per-site", type=options.number(int, 3, 100_000), default=defaults.SYNTH_SUBJECTS_PER_SITE, metavar="K",
                        help=f"subjects per site, at least 3 (default {defaults.SYNTH_SUBJECTS_PER_SITE})")
    parser.add_argument("--shape", type=options.number(int, defaults.SYNTH_MIN_SHAPE, defaults.SYNTH_MAX_SHAPE), default=defaults.SYNTH_SHAPE, metavar="S",
                        help=f"cubic image shape in voxels over a 200 mm field of view, {defaults.SYNTH_MIN_SHAPE} to "
                             f"{defaults.SYNTH_MAX_SHAPE} (default {defaults.SYNTH_SHAPE}, i.e. 3.125 mm voxels)")
    parser.add_argument("--seed", type=options.SEED, default=defaults.SEED, metavar="X",
                        help=f"random seed; the same seed writes identical files (default {defaults.SEED})")
    parser.add_argument("--biased", action="store_true",
                        help="give sites partly overlapping age ranges (adjacent sites share half their age window), "
                             "for the biased-dataset experiments")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty directory: the files harmonize wrote there are replaced; "
                             "other files are kept, or refused by name where the cohort goes (images/, labels/, "
                             "manifest.csv, cohort.json)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and log where it went; 0 on success."""
    from harmonize.data.synth import SynthConfig, generate_cohort

    config = SynthConfig(n_sites=args.sites, subjects_per_site=args.subjects_per_site, shape=args.shape,
                         seed=args.seed, biased=args.biased)
    manifest = generate_cohort(args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    logger.info("%d sites x %d subjects at %d^3: manifest %s", args.sites, args.subjects_per_site, args.shape, manifest)
    return 0
