"""Entry point of the ``harmonize`` command.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit status). Modules import
the heavy library code inside ``func`` so that ``harmonize --help`` stays fast.

Exit status: 0 ok, 1 failed (a user's mistake is reported in one paragraph, without a traceback unless
``--debug``), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from harmonize import __version__
from harmonize.errors import HarmonizeError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("synth", "validate", "manifest", "preprocess", "demo", "audit", "compare", "bundle")

logger = logging.getLogger("harmonize")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="harmonize",
        description="Remove scanner bias from MRI deep-learning models, and make trained MRI models forget data.",
    )
    parser.add_argument("--version", action="version", version=f"harmonize {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"harmonize.cli.{name}").register(sub)
    return parser


def _configure_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("matplotlib", "PIL", "h5py", "numexpr", "ignite"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``harmonize`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.debug, args.quiet)
    try:
        return int(args.func(args) or 0)
    except HarmonizeError as err:
        if args.debug:
            logger.exception("harmonize %s failed", args.command)
        else:
            print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
