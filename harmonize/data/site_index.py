"""An ordered mapping from a categorical value (a site, a scanner, a sex) to an integer index.

A domain head predicts an integer class, while a manifest names sites with strings. :class:`CategoryIndex`
fixes the mapping once, from the *training* rows of a manifest (sorted, so the same manifest always gives the
same mapping), saves it next to the data as JSON and reuses it for any new data, so that index 2 means the
same scanner in training, validation, the audit and inference. A value the index has never seen raises an
error naming the value, the manifest row and the known values, like TorchIO's ``HistogramStandardization``
does for an unknown image key.

``SiteIndex`` is the same class (the index of the ``site`` column is the common case).

Example:
    >>> index = CategoryIndex(["siteA", "siteB"])
    >>> index["siteA"], index["siteB"], len(index)
    (0, 1, 2)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmonize.errors import HarmonizeError
from harmonize.io import write_json_atomic
from harmonize.keys import Keys, Split

__all__ = [
    "SITE_INDEX_FILENAME",
    "CategoryIndex",
    "SiteIndex",
    "UnknownCategoryError",
    "index_filename",
]

logger = logging.getLogger(__name__)

#: Suffix of the JSON file an index is saved to (``site_index.json`` for the ``site`` column).
INDEX_SUFFIX = "_index.json"
#: File name of the site index saved next to a manifest.
SITE_INDEX_FILENAME = f"{Keys.SITE}{INDEX_SUFFIX}"
#: Version of the JSON layout written by :meth:`CategoryIndex.save`.
INDEX_FORMAT_VERSION = 1


def index_filename(name: str) -> str:
    """File name under which the index of column ``name`` is saved (``site`` -> ``site_index.json``)."""
    return f"{name}{INDEX_SUFFIX}"


class UnknownCategoryError(HarmonizeError, KeyError):
    """A value that the index was not built with (e.g. a site never seen in the training rows)."""


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return bool(pd.isna(value)) if np.ndim(value) == 0 else False


class CategoryIndex(Mapping[str, int]):
    """Ordered, immutable mapping from category (str) to index ``0..n-1``.

    Args:
        categories: the known values, in index order. Values are converted to ``str``; they must be unique
            and non-empty.
        name: what the values are (a manifest column such as ``site``); used in messages and file names.

    Raises:
        HarmonizeError: no categories, an empty value, or a duplicate.
    """

    def __init__(self, categories: Iterable[Any], name: str = str(Keys.SITE)) -> None:
        cats = [str(c) for c in categories]
        problems = [f"empty {name!r} value at position {i}" for i, c in enumerate(cats) if not c.strip()]
        dups = sorted(c for c, count in Counter(cats).items() if count > 1)
        problems += [f"{name!r} value {d!r} is listed more than once" for d in dups]
        if not cats:
            problems.append(f"no {name!r} values given")
        if problems:
            raise HarmonizeError(f"Cannot build the {name!r} index.", problems=problems)
        self._name = str(name)
        self._categories = tuple(cats)
        self._index = {c: i for i, c in enumerate(cats)}

    # --- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        column: str = str(Keys.SITE),
        split: str | None = str(Split.TRAIN),
        source: str | os.PathLike[str] | None = None,
    ) -> CategoryIndex:
        """Build the index from the distinct values of ``column`` in the rows of ``split``, sorted.

        Args:
            frame: a manifest as returned by :func:`harmonize.data.manifest.read_manifest`.
            column: the categorical column (``site``, ``sex`` or an extra confound).
            split: only rows of this split are used (``train`` by default, so that validation and test data
                never add a class); ``None`` uses every row.
            source: the manifest file, named in the error message.

        Raises:
            HarmonizeError: the column is absent, or no row of the split has a value in it.
        """
        where = f" of {source}" if source is not None else ""
        if column not in frame.columns:
            raise HarmonizeError(
                f"The manifest{where} has no {column!r} column, so no {column!r} index can be built. "
                f"Columns: {list(frame.columns)}."
            )
        rows = frame if split is None else frame[frame[Keys.SPLIT].astype(str) == str(split)]
        values = sorted({str(v) for v in rows[column] if not _is_missing(v)})
        if not values:
            which = f"rows with split {split!r}" if split is not None else "rows"
            raise HarmonizeError(
                f"The manifest{where} has no {which} with a {column!r} value to build the {column!r} index from. "
                f"Add {which}, or pass the {index_filename(column)} saved by the training run."
            )
        return cls(values, name=column)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CategoryIndex:
        """Load an index saved by :meth:`save`.

        Raises:
            HarmonizeError: the file is missing, is not valid JSON or lacks ``categories``.
        """
        path = Path(path)
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise HarmonizeError(f"Index file {path} does not exist.") from err
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HarmonizeError(f"Index file {path} cannot be read as JSON ({err}). Delete it to rebuild it.") from err
        if not isinstance(content, dict) or not isinstance(content.get("categories"), list):
            raise HarmonizeError(
                f"Index file {path} has no 'categories' list; expected "
                '{"name": "site", "categories": ["siteA", "siteB"]}. Delete it to rebuild it.'
            )
        return cls(content["categories"], name=str(content.get("name", Keys.SITE)))

    @classmethod
    def load_or_build(
        cls,
        path: str | os.PathLike[str],
        frame: pd.DataFrame,
        column: str = str(Keys.SITE),
        split: str | None = str(Split.TRAIN),
        source: str | os.PathLike[str] | None = None,
    ) -> CategoryIndex:
        """Reuse the index saved at ``path``, or build it from ``frame`` (see :meth:`from_frame`) and save it.

        Raises:
            HarmonizeError: the saved index is of another column, or cannot be built or read.
        """
        path = Path(path)
        if path.is_file():
            index = cls.load(path)
            if index.name != column:
                raise HarmonizeError(
                    f"Index file {path} holds the {index.name!r} index, not the {column!r} index. "
                    f"Pass the {index_filename(column)} file instead."
                )
            logger.debug("Reusing the %s index %s (%d values)", column, path, len(index))
            return index
        index = cls.from_frame(frame, column=column, split=split, source=source)
        index.save(path)
        logger.info("Saved the %s index (%d values) to %s", column, len(index), path)
        return index

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index as JSON to ``path`` atomically and return the path."""
        path = Path(path)
        content = {"format": INDEX_FORMAT_VERSION, "name": self._name, "categories": list(self._categories)}
        write_json_atomic(path, content, indent=2)
        return path

    # --- lookup ----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """What the values are (e.g. ``site``)."""
        return self._name

    @property
    def categories(self) -> tuple[str, ...]:
        """The known values in index order."""
        return self._categories

    def __getitem__(self, value: Any) -> int:
        """Index of ``value``; an unknown value raises :class:`UnknownCategoryError` (also a ``KeyError``)."""
        return self.index(value)

    def index(self, value: Any, row: Any = None) -> int:
        """Index of ``value``; ``row`` (a manifest row number) is named in the error.

        Raises:
            UnknownCategoryError: ``value`` is not a known category.
        """
        try:
            return self._index[str(value)]
        except KeyError:
            where = f" in row {row}" if row is not None else ""
            raise UnknownCategoryError(
                f"Unknown {self._name} {str(value)!r}{where}: known {self._name}s are {list(self._categories)}. "
                f"The index is built from the training rows; a new {self._name} needs a model trained with it."
            ) from None

    def encode(
        self,
        values: Sequence[Any],
        rows: Sequence[Any] | None = None,
        missing: int | None = None,
        unknown: int | None = None,
    ) -> np.ndarray:
        """Map many values to an ``int64`` array, reporting every bad value at once.

        Args:
            values: the values (e.g. a manifest column).
            rows: the manifest row of each value, named in the error (positions are used when ``None``).
            missing: index given to a missing value (None, NaN, empty); ``None`` makes a missing value an error.
            unknown: index given to a value the index does not know (logged once as a warning); ``None`` makes
                it an error.

        Raises:
            UnknownCategoryError: a missing or unknown value where no replacement index was given.
        """
        rows = list(range(len(values))) if rows is None else list(rows)
        if len(rows) != len(values):
            raise ValueError(f"{len(values)} values but {len(rows)} row numbers")
        out = np.empty(len(values), dtype=np.int64)
        problems: list[str] = []
        unknown_seen: set[str] = set()
        for i, (value, row) in enumerate(zip(values, rows)):
            if _is_missing(value):
                if missing is None:
                    problems.append(f"missing {self._name} in row {row}")
                out[i] = -1 if missing is None else missing
            elif str(value) in self._index:
                out[i] = self._index[str(value)]
            elif unknown is not None:
                unknown_seen.add(str(value))
                out[i] = unknown
            else:
                problems.append(f"unknown {self._name} {str(value)!r} in row {row}")
                out[i] = -1
        if problems:
            raise UnknownCategoryError(
                f"{len(problems)} {self._name} value(s) cannot be mapped to an index; known {self._name}s: "
                f"{list(self._categories)}. The index is built from the training rows.",
                problems=problems,
            )
        if unknown_seen:
            logger.warning(
                "%s(s) %s are not in the %s index %s; they get index %d",
                self._name,
                sorted(unknown_seen),
                self._name,
                list(self._categories),
                unknown,
            )
        return out

    def category(self, index: int) -> str:
        """The value at ``index`` (the inverse of lookup)."""
        if not 0 <= int(index) < len(self._categories):
            raise IndexError(f"{self._name} index {index} is out of range 0..{len(self._categories) - 1}")
        return self._categories[int(index)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._categories)

    def __len__(self) -> int:
        return len(self._categories)

    def __contains__(self, value: object) -> bool:
        return str(value) in self._index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CategoryIndex):
            return self._name == other._name and self._categories == other._categories
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash((self._name, self._categories))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, categories={list(self._categories)})"


#: The index of the ``site`` column (the same class; the default ``name`` is ``site``).
SiteIndex = CategoryIndex
