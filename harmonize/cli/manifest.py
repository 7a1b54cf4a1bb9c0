"""``harmonize manifest``: build a manifest from a BIDS dataset, or describe the manifest schema."""

from __future__ import annotations

import argparse

from harmonize import defaults
from harmonize.cli import options
from harmonize.errors import ConfigError

__all__ = ["register", "run"]

FROM_BIDS = "from-bids"
SCHEMA = "schema"

DESCRIPTION = """\
Manifests list a cohort's scans (CSV, one row per scan: subject_id, image, site, age, sex, split, optional
label and forget, and any confound columns). `from-bids` writes one for a BIDS dataset; `schema` prints the
schema's path and its columns.
"""

FROM_BIDS_DESCRIPTION = """\
Write a manifest for a BIDS dataset: one row per T1w image (sub-*/anat/*_T1w.nii.gz and
sub-*/ses-*/anat/*_T1w.nii.gz), subject_id from the file name (sub-01, or sub-01_ses-1 with sessions). Sex
comes from participants.tsv; age from the session's row of sub-XX/sub-XX_sessions.tsv when it has an age
column, else from participants.tsv. The site comes from --site-column (a participants.tsv column) or
--site-from: participants:COL, sessions:COL (sub-XX_sessions.tsv) or sidecar:FIELD,... (the scan's JSON
sidecar, inherited from T1w.json files above it; several fields are joined with '_'). Sex values F/female/0
map to F and M/male/1 to M (add others with --sex-map). Splits are drawn per participant within each site,
reproducibly from --seed. Image paths are written relative to the manifest's folder. The BIDS dataset is
only read.
"""


def _sex_map(text: str) -> dict[str, str]:
    mapping = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        value, sep, sex = item.partition("=")
        if not sep or not value.strip() or not sex.strip():
            raise ConfigError(f"--sex-map: '{item}' is not VALUE=F or VALUE=M (e.g. --sex-map 1=M,2=F)")
        mapping[value.strip()] = sex.strip()
    return mapping


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``manifest`` subcommand and its actions ``from-bids`` and ``schema``."""
    parser = subparsers.add_parser("manifest", help="build a manifest from BIDS, or describe the schema",
                                   description=DESCRIPTION)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    bids = actions.add_parser(FROM_BIDS, help="write a manifest for a BIDS dataset", description=FROM_BIDS_DESCRIPTION)
    bids.add_argument("bids_dir", metavar="BIDS_DIR", help="root folder of the BIDS dataset (holds participants.tsv)")
    site = bids.add_mutually_exclusive_group(required=True)
    site.add_argument("--site-column", metavar="COL",
                      help="the participants.tsv column holding the site or scanner id")
    site.add_argument("--site-from", metavar="SOURCE:FIELDS",
                      help="where each scan's site is read: participants:COL, sessions:COL or sidecar:FIELD,... "
                           "e.g. sidecar:Manufacturer,ManufacturersModelName (sidecar fields: "
                           "Manufacturer, ManufacturersModelName, MagneticFieldStrength, StationName, "
                           "DeviceSerialNumber)")
    bids.add_argument("--out", required=True, metavar="CSV", help="the manifest to write, e.g. manifest.csv")
    bids.add_argument("--seed", type=options.SEED, default=defaults.SEED, help=f"seed of the split draw (default {defaults.SEED})")
    bids.add_argument("--val-fraction", type=float, default=defaults.MANIFEST_VAL_FRACTION, metavar="F",
                      help=f"fraction of each site's participants in val (default {defaults.MANIFEST_VAL_FRACTION})")
    bids.add_argument("--test-fraction", type=float, default=defaults.MANIFEST_TEST_FRACTION, metavar="F",
                      help=f"fraction of each site's participants in test (default {defaults.MANIFEST_TEST_FRACTION})")
    bids.add_argument("--sex-map", default="", metavar="V=S,...",
                      help="extra sex codes, e.g. '1=M,2=F' for ABIDE (values are matched case-insensitively)")
    bids.add_argument("--age-column", default=None, metavar="COL",
                      help="participants.tsv and sessions.tsv column with age in years (default: the BIDS "
                           "column 'age')")
    bids.add_argument("--sex-column", default=None, metavar="COL",
                      help="participants.tsv column with sex (default: the BIDS column 'sex')")
    bids.add_argument("--columns", default="", metavar="A,B",
                      help="further participants.tsv columns to copy into the manifest, e.g. to use as confounds")
    bids.add_argument("--skip-invalid", action="store_true",
                      help="leave out participants with a bad row or no image (listed as warnings) instead of failing")
    bids.add_argument("--overwrite", action="store_true",
                      help="replace the output file if harmonize wrote it (a file of yours there is refused; the "
                           "folder's other files are kept)")
    actions.add_parser(SCHEMA, help="print the manifest schema's path and columns",
                       description="Print the path of the manifest's JSON Schema and describe each column.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 0 on success."""
    if args.action == SCHEMA:
        from harmonize.data.manifest import format_schema

        print(format_schema())
        return 0
    from harmonize.data.bids import BIDS_AGE, BIDS_SEX, manifest_from_bids

    path = manifest_from_bids(args.bids_dir, args.site_column, args.out, seed=args.seed,
                              val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                              sex_map=_sex_map(args.sex_map), age_column=args.age_column or BIDS_AGE,
                              sex_column=args.sex_column or BIDS_SEX,
                              extra_columns=[c.strip() for c in args.columns.split(",") if c.strip()],
                              skip_invalid=args.skip_invalid, overwrite=args.overwrite, site_from=args.site_from)
    print(path)
    return 0
