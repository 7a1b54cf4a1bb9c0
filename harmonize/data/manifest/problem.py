"""One problem of a manifest, located by row, column and file, and the order in which problems are listed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ManifestProblem", "problem_order", "suggest"]


@dataclass(frozen=True)
class ManifestProblem:
    """One thing wrong with a manifest, located as precisely as possible.

    Attributes:
        message: what is wrong and, where useful, how to fix it.
        row: line number of the row in the CSV (header = 1), or None for the whole file.
        column: the column concerned, or None.
        file: the image or label file concerned (absolute path), or None.
    """

    message: str
    row: int | None = None
    column: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.file is not None:
            where.append(f"file '{self.file}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


def problem_order(problem: ManifestProblem) -> tuple[bool, int]:
    """Sort key: whole-file problems first, then by row (stable within a row)."""
    return problem.row is not None, problem.row or 0


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the candidate nearest ``name`` (case and spaces ignored first), or ``""``."""
    candidates = list(candidates)
    for cand in candidates:
        if cand.strip().lower() == name.lower():
            return f" (did you mean '{cand}'?)"
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
