"""``harmonize validate MANIFEST``: check a manifest's table, every image and label, and the study design."""

from __future__ import annotations

import argparse

from harmonize.cli import options

__all__ = ["register", "run"]

DESCRIPTION = """\
Check a manifest (CSV, one row per scan) before training: required columns and their values, unique subject
ids, then every image and label (exists, reads as NIfTI, 3D, finite voxels, label on the image's grid).
Prints subjects per site and split, the age range per site and the age range all sites share, then every
problem (row = line of the file, header = row 1) and warning. Exit status 0 when there is no problem, 1 when
there is any (with --strict, also when there is a warning). The columns are described by `harmonize manifest schema` and docs/manifests.md.
"""


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate`` subcommand."""
    parser = subparsers.add_parser("validate", help="check a manifest and every image it lists",
                                   description=DESCRIPTION)
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest CSV to check")
    parser.add_argument("--no-images", action="store_true",
                        help="check the table and the design only; do not load images (fast)")
    parser.add_argument("--confounds", default="", metavar="A,B",
                        help="comma-separated confound columns, each optionally with its kind, e.g. "
                             "'scanner_field:categorical,tiv:continuous' (without a kind, numbers are continuous)")
    parser.add_argument("--require", default="", metavar="A,B",
                        help="comma-separated further columns that must be present, e.g. 'label' for segmentation")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 on warnings too (a single site, a site without training scans or with very few, "
                             "no age range shared by the sites): for pipelines that must stop there")
    parser.add_argument("--workers", type=options.JOBS, default=None, metavar="N",
                        help="threads loading images (default: 4, at most the number of CPUs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the manifest and print the report; 0 when it has no problem (nor warning with --strict), else 1."""
    from harmonize.data.manifest import validate_manifest

    report = validate_manifest(args.manifest, confounds=_names(args.confounds), require=_names(args.require),
                               check_images=not args.no_images, num_workers=args.workers,
                               progress=not args.quiet)
    print(report.format())
    if report.ok and args.strict and report.warnings:
        print(f"FAILED (--strict): {len(report.warnings)} warning(s)")
        return 1
    return 0 if report.ok else 1
