"""``harmonize bundle run DIR``: run a MONAI bundle config, rejecting overrides of ids the configs lack."""

from __future__ import annotations

import argparse
import logging

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bundle`` subcommand (with its ``run`` action)."""
    parser = subparsers.add_parser(
        "bundle",
        help="run a MONAI bundle (as python -m monai.bundle run), checking the override names first",
        description=(
            "Run a bundle's config(s) with monai.bundle.run. Unlike python -m monai.bundle run, an override that "
            "names an id the configs do not define (e.g. --max_epoch for max_epochs) is an error that names the "
            "closest ids, instead of a new id that silently changes nothing."
        ),
    )
    actions = parser.add_subparsers(dest="bundle_action", metavar="ACTION", required=True)
    run_parser = actions.add_parser(
        "run",
        help="run a bundle config",
        description=(
            "Run DIR's configs/train.json (or --config_file) with overrides given as --<id> <value> pairs, e.g. "
            "harmonize bundle run bundles/brain_age_unlearning --config_file configs/evaluate.json "
            "--manifest my/manifest.csv. Nested ids use # (--unlearning#beta 5). Values are read as JSON or "
            "Python literals (2, null, \"['a','b']\"), else as text. bundle_root defaults to DIR."
        ),
    )
    run_parser.add_argument("bundle_dir", metavar="DIR", help="the bundle's folder (holding configs/)")
    run_parser.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        metavar="--ID VALUE",
        help="--config_file FILE or \"['a.json','b.json']\" (relative to DIR), --meta_file, --logging_file, and "
        "overrides of config ids",
    )
    run_parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the overrides and run the bundle; return 0."""
    from harmonize.bundle.run_bundle import run_bundle

    run_bundle(args.bundle_dir, list(args.options))
    logger.info("bundle run finished: %s", args.bundle_dir)
    return 0
