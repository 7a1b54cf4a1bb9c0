"""The one rule for numeric command-line options: argparse ``type=`` factories that check the range.

Every subcommand declares its numeric options with :func:`number` (one value) or :func:`numbers` (a
comma-separated list), so that ``--permutations -5``, ``--seed -1``, ``--epochs 0``, ``--spacing 0`` or
``--shape 1000`` are refused the same way before any work starts: argparse prints ``harmonize audit: error:
argument --permutations: must be an integer from 0 to 100000, got '-5'`` and exits with status 2.
The ranges are the library's (:mod:`harmonize.defaults`); a value that only fails with the data (too many
encoder blocks for the scans' size, a volume too large for the memory) is checked where the data are read.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from harmonize import defaults

__all__ = ["BOOTSTRAP", "CHANNELS", "EPOCHS", "GIGABYTES", "JOBS", "LEARNING_RATE", "LOADER_WORKERS", "PERMUTATIONS",
           "SEED", "SHAPE", "SPACING", "add_dataset_options", "dataset_settings", "number", "numbers"]


def _range(kind: type, low: float | None, high: float | None, low_open: bool) -> str:
    what = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        return f"{what} from {low} to {high}" if not low_open else f"{what} > {low} and <= {high}"
    if low is not None:
        return f"{what} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{what} <= {high}"
    return what


def _parse(text: str, kind: type, low: float | None, high: float | None, low_open: bool) -> int | float:
    expected = _range(kind, low, high, low_open)
    try:
        value = kind(text.strip())
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
    return value


def number(
    kind: type = int, low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[str], int | float]:
    """An argparse ``type=`` that reads one ``int`` or ``float`` in ``[low, high]`` (``(low, high]`` if ``low_open``).

    Example: ``parser.add_argument("--seed", type=number(int, 0, 2**32 - 1))``; argparse names the option in its
    message (``argument --seed: must be an integer from 0 to 4294967295, got '-1'``).
    """

    def parse(text: str) -> int | float:
        return _parse(text, kind, low, high, low_open)

    parse.__name__ = kind.__name__  # argparse shows it in "invalid <name> value" for other errors
    return parse


def numbers(
    kind: type = int, low: float | None = None, high: float | None = None, min_items: int = 1,
    max_items: int | None = None,
) -> Callable[[str], tuple]:
    """An argparse ``type=`` that reads a comma-separated list (``8,16,32``), each item in ``[low, high]``."""

    def parse(text: str) -> tuple:
        items = text.split(",")
        count = f"{min_items} to {max_items}" if max_items is not None else f"at least {min_items}"
        if not (min_items <= len(items) <= (max_items or len(items))) or any(not t.strip() for t in items):
            raise argparse.ArgumentTypeError(
                f"must be {count} comma-separated values, each {_range(kind, low, high, False)}, got {text!r}")
        values = []
        for position, item in enumerate(items, 1):
            try:
                values.append(_parse(item, kind, low, high, False))
            except argparse.ArgumentTypeError as err:
                raise argparse.ArgumentTypeError(f"item {position} of {text!r} {err}") from None
        return tuple(values)

    parse.__name__ = "list"
    return parse


#: The options several subcommands share, so that each is checked the same way everywhere.
SEED = number(int, 0, defaults.MAX_SEED)
PERMUTATIONS = number(int, 0, defaults.MAX_PERMUTATIONS)
EPOCHS = number(int, 1, defaults.MAX_EPOCHS)
JOBS = number(int, 1, defaults.MAX_JOBS)
#: How many seeds each method trains on (compare, demo).
SEEDS_COUNT = number(int, 1, defaults.MAX_SEEDS)
SPACING = number(float, 0, defaults.MAX_SPACING, low_open=True)
#: One axis of a preprocessed scan's shape (voxels).
SHAPE = number(int, 1, defaults.MAX_SHAPE)
CHANNELS = numbers(int, 1, defaults.MAX_CHANNELS, max_items=defaults.MAX_BLOCKS)
#: A learning rate (forget) and the bootstrap replicates of an interval (forget's membership audit).
LEARNING_RATE = number(float, 0, 1, low_open=True)
BOOTSTRAP = number(int, 0, defaults.MAX_PERMUTATIONS)
#: Data-loader worker processes (0: the training process reads the scans itself).
LOADER_WORKERS = number(int, 0, defaults.MAX_JOBS)
#: A size in GiB (of cached scans).
GIGABYTES = number(float, 0)


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--dataset-cache``, ``--cache-dir``, ``--cache-limit-gb`` and ``--loader-workers`` (training and audit)."""
    from harmonize.keys import DatasetCache

    parser.add_argument("--dataset-cache", choices=[c.value for c in DatasetCache], default=DatasetCache.MEMORY.value,
                        help="where training scans are kept between epochs: 'memory' (default), 'disk' (a cache "
                             "folder, --cache-dir) or 'none' (read per item: memory flat in the number of scans)")
    parser.add_argument("--cache-dir", default=None, metavar="DIR", help="the cache folder of --dataset-cache disk")
    parser.add_argument("--cache-limit-gb", type=GIGABYTES, default=None, metavar="GB",
                        help="cache at most GB GiB of scans; the others are read per item (default: no limit)")
    parser.add_argument("--loader-workers", type=LOADER_WORKERS, default=0, metavar="N",
                        help="data-loader processes that read scans ahead of training and audit (default 0)")


def dataset_settings(args: argparse.Namespace) -> dict[str, object]:
    """The training settings (``BrainAgeSettings`` fields) that :func:`add_dataset_options` parsed."""
    return {"cache": args.dataset_cache, "cache_dir": args.cache_dir, "cache_limit_gb": args.cache_limit_gb,
            "num_workers": args.loader_workers}
