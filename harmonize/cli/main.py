"""Entry point of the ``harmonize`` command.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit status). Modules import
the heavy library code inside ``func`` so that ``harmonize --help`` stays fast.

Exit status: 0 ok, 1 failed, 2 usage error (argparse, e.g. a numeric option out of its range:
:mod:`harmonize.cli.options`), 130 interrupted.

One boundary for errors (:func:`describe_error`): a user's mistake (:class:`~harmonize.errors.HarmonizeError`) and
an environment fault (an ``OSError``: permission, full disk, bad path, name too long; a NUL byte in a path; memory
exhausted, with the size asked for; a device this machine lacks) are printed as one ``error: ...`` paragraph,
without a traceback unless ``--debug``. Anything else is a bug: its traceback is printed, then one line saying so
and where to report it.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import re
import sys
import traceback
from collections.abc import Sequence

from harmonize import __version__
from harmonize.errors import HarmonizeError

__all__ = ["BUG_REPORT", "COMMANDS", "build_parser", "describe_error", "main"]

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("synth", "validate", "manifest", "preprocess", "demo", "audit", "compare", "forget", "bundle")

logger = logging.getLogger("harmonize")

#: Where a bug is reported (printed after an unexpected exception's traceback).
BUG_REPORT = ("the harmonize-mri issue tracker (the project's repository, 'Issues'), with the command line, the "
              "output of 'harmonize --version' and the traceback above")
#: How to ask for less memory, by subcommand (printed after an out-of-memory error).
MEMORY_HINTS = {
    "synth": "a smaller --shape or fewer --sites / --subjects-per-site",
    "preprocess": "a coarser --spacing or a smaller --shape",
    "compare": "fewer or smaller --channels, or a preprocessed manifest of smaller scans (harmonize preprocess "
               "--spacing / --shape)",
    "audit": "scans preprocessed to a smaller size (harmonize preprocess --spacing / --shape), or another --device",
    "demo": "--quick",
    "forget": "a smaller batch size, or scans preprocessed to a smaller size (harmonize preprocess --shape)",
    "bundle": "a smaller batch size, patch or network in the bundle's overrides",
}
#: What an OSError means, and what to do, by errno.
_OS_HINTS = {
    errno.EACCES: "permission denied: choose a folder you can write to (or read), or fix its permissions",
    errno.EPERM: "operation not permitted: choose a folder you own, or fix its permissions",
    errno.ENOSPC: "no space left on the disk: free some space, or choose an --out on another disk",
    errno.EDQUOT: "disk quota exceeded: free some space, or choose an --out on another disk",
    errno.ENAMETOOLONG: "the file name is too long for the file system: shorten it (a subject id, or --out)",
    errno.ENOENT: "no such file or folder: check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder where a file was expected: give a file",
    errno.EEXIST: "it already exists: choose another path or remove it",
    errno.EROFS: "the file system is read-only: choose an --out on a writable disk",
    errno.ENOMEM: "out of memory",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer workers",
}
#: PyTorch / numpy out-of-memory messages and the size they report.
_MEMORY_PATTERNS = (
    re.compile(r"you tried to allocate (\d+) bytes"),
    re.compile(r"Tried to allocate ([\d.]+ [KMGT]i?B)"),
    re.compile(r"Unable to allocate ([\d.]+ [KMGT]i?B)"),
)
#: Messages of PyTorch when a device is absent or unknown.
_DEVICE_PATTERNS = (
    "Torch not compiled with CUDA", "Found no NVIDIA driver", "No CUDA GPUs are available", "invalid device ordinal",
    "device type at start of device string", "Invalid device string", "CUDA driver initialization failed",
)


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


def _os_message(err: OSError) -> str:
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    where = " and ".join(repr(n) if len(n) <= 200 else repr(n[:200] + "...") for n in names)
    hint = _OS_HINTS.get(err.errno or -1, err.strerror or type(err).__name__)
    detail = f" ({err.strerror})" if err.strerror and err.errno in _OS_HINTS else ""
    if not names:
        return f"{hint}{detail}: {err}" if err.errno in _OS_HINTS else f"{type(err).__name__}: {err}"
    return f"{where}: {hint}{detail}."


def _memory_message(text: str, command: str) -> str:
    size = next((m.group(1) for m in (p.search(text) for p in _MEMORY_PATTERNS) if m), None)
    if size is not None and size.isdigit():
        size = f"{int(size) / 2**30:.1f} GiB"
    asked = f"an allocation of {size}" if size else "an allocation"
    how = MEMORY_HINTS.get(command, "smaller inputs or settings")
    return (f"out of memory: {asked} failed ({text.splitlines()[0].strip()[:300] if text else 'MemoryError'}). Ask "
            f"for less: {how}; or run on a machine with more memory.")


def describe_error(err: BaseException, command: str = "", argv: Sequence[str] = ()) -> str | None:
    """The one-paragraph message of a user's or the environment's error, or ``None`` when it is a bug.

    Args:
        err: the exception raised by a subcommand.
        command: the subcommand, for the memory hints.
        argv: the command line, to name the argument that holds a NUL byte.
    """
    from harmonize.devices import available_devices

    text = str(err)
    if isinstance(err, HarmonizeError):
        return text
    if isinstance(err, MemoryError):
        return _memory_message(text or "MemoryError", command)
    if isinstance(err, OSError):
        if err.errno == errno.ENOMEM:
            return _memory_message(text, command)
        return _os_message(err)
    if isinstance(err, (ValueError, TypeError)) and "null" in text and ("byte" in text or "character" in text):
        bad = [a for a in argv if "\0" in a]
        named = f" (argument {bad[0]!r})" if bad else ""
        return (f"a path holds a NUL byte (\\x00){named}, which no file name can hold: remove it from the path "
                "(check the command line and the manifest's paths).")
    if isinstance(err, (RuntimeError, AssertionError)):
        if any(p.search(text) for p in _MEMORY_PATTERNS) or "out of memory" in text.lower():
            return _memory_message(text, command)
        if any(p in text for p in _DEVICE_PATTERNS):
            return (f"the device asked for is not available ({text.splitlines()[0][:200]}). This machine has: "
                    f"{', '.join(available_devices())}; pass --device cpu or run on a machine with that device.")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``harmonize`` command line and return its exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.debug, args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the one boundary: a user's or the environment's error in one paragraph, else a bug
        message = describe_error(err, args.command, argv)
        if message is None:
            traceback.print_exception(err, file=sys.stderr)
            print(f"error: this is a bug in harmonize {__version__} (an unexpected {type(err).__name__} in "
                  f"'harmonize {args.command}'), not a problem with your input. Please report it on {BUG_REPORT}.",
                  file=sys.stderr)
            return 1
        if args.debug:
            logger.exception("harmonize %s failed", args.command)
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
