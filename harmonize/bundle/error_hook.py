"""Report a user's mistake in a bundle run as one ``error:`` paragraph instead of a chained traceback.

``python -m monai.bundle run`` wraps an error raised while a config item is built ("Failed to instantiate
...") or a transform runs ("applying transform ..."), so a missing file is buried in dozens of lines of
traceback. The bundles' configs call :func:`install_error_hook` first: an uncaught exception with a
:class:`~harmonize.errors.HarmonizeError` in its chain (``__cause__``/``__context__``) is printed as
``error: <message>`` (the interpreter then exits with status 1, as for any uncaught exception); any other
exception keeps its full traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType

from harmonize.errors import HarmonizeError

__all__ = ["find_harmonize_error", "install_error_hook"]

def find_harmonize_error(error: BaseException | None) -> HarmonizeError | None:
    """The first :class:`HarmonizeError` in an exception's chain of causes and contexts, or None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, HarmonizeError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_error_hook() -> None:
    """Install (once) a ``sys.excepthook`` that prints a chained :class:`HarmonizeError` as one paragraph."""
    previous = sys.excepthook
    if getattr(previous, "_harmonize", False):
        return

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        found = find_harmonize_error(error)
        if found is None:
            previous(kind, error, trace)
            return
        sys.stderr.write(f"error: {found}\n")
        sys.stderr.flush()

    hook._harmonize = True  # type: ignore[attr-defined]
    sys.excepthook = hook
