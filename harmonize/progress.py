"""Progress that suits where it goes: a live tqdm bar on a terminal, a few plain log lines elsewhere.

Written to a file or a CI log, a tqdm bar repeats itself with carriage returns at every update. Here a loop
(:func:`progress`) and a training engine (:class:`ProgressHandler`) show a bar only when the stream is a
terminal; otherwise they log one line per :data:`~harmonize.defaults.PROGRESS_EVERY` items (and one at the
end), or one line per epoch, through :mod:`logging` (the CLI prints INFO lines to stderr).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, TypeVar

from harmonize import defaults

__all__ = ["ProgressHandler", "interactive", "progress"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where progress goes) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _lines(iterable: Iterable[T], desc: str, unit: str, total: int | None, every: int) -> Iterator[T]:
    start = time.perf_counter()
    count = 0
    of = f"/{total}" if total is not None else ""
    for count, item in enumerate(iterable, start=1):
        yield item
        if count % every == 0 and count != total:
            logger.info("%s: %d%s %ss (%.1f s)", desc, count, of, unit, time.perf_counter() - start)
    logger.info("%s: %d%s %ss done (%.1f s)", desc, count, of, unit, time.perf_counter() - start)


def progress(iterable: Iterable[T], desc: str, unit: str = "it", total: int | None = None, enabled: bool = True,
             every: int = defaults.PROGRESS_EVERY, stream: IO[str] | None = None) -> Iterable[T]:
    """Iterate over ``iterable`` with a progress display suited to ``stream``.

    Args:
        iterable: the items.
        desc: what the loop does, e.g. ``"preprocess: resample"``.
        unit: what an item is, e.g. ``"scan"``.
        total: the number of items (default ``len(iterable)`` when it has one).
        enabled: False shows nothing.
        every: without a terminal, log a line every ``every`` items (and at the end).
        stream: where a bar would go (default ``sys.stderr``); a terminal gets a tqdm bar.

    Returns:
        An iterable over the same items.

    Example:
        >>> list(progress(range(3), "count", enabled=False))
        [0, 1, 2]
    """
    from harmonize.errors import integer_problem, raise_problems

    raise_problems("progress", [integer_problem("every", every)])
    if not enabled:
        return iterable
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, unit=unit, total=total, file=stream)
    return _lines(iterable, desc, unit, total, every)


def _loss(output: Any) -> float | None:
    """The loss in an engine's output (a dict, or a list of dicts after decollation), or None."""
    if isinstance(output, (list, tuple)) and output:
        output = output[0]
    if isinstance(output, Mapping) and "loss" in output:
        value = output["loss"]
        try:
            return float(value.detach().mean()) if hasattr(value, "detach") else float(value)
        except (TypeError, ValueError):
            return None
    return None


class ProgressHandler:
    """Training progress for an ignite/MONAI engine: a live bar on a terminal, one log line per epoch elsewhere.

    On a terminal it attaches ignite's ``ProgressBar``; otherwise, at the end of each epoch, it logs
    ``desc: epoch 3/10, loss 0.1234 (2.1 s)`` with the epoch's mean loss.

    Args:
        desc: what is trained, e.g. ``"brain age (dann)"``.
        output_transform: maps the engine's output to ``{"loss": float}`` for the bar (default: the output's
            ``loss`` when it has one).
        stream: where a bar would go (default ``sys.stderr``).
    """

    def __init__(self, desc: str = "train", output_transform: Callable[[Any], Mapping[str, float]] | None = None,
                 stream: IO[str] | None = None) -> None:
        self.desc = desc
        self.output_transform = output_transform
        self.stream = stream
        self._sum = 0.0
        self._count = 0
        self._start = 0.0

    def attach(self, engine: Any) -> None:
        """Attach a bar (terminal) or the per-epoch log line (anything else) to ``engine``."""
        from ignite.engine import Events

        if interactive(self.stream):
            from ignite.handlers.tqdm_logger import ProgressBar

            bar = ProgressBar(persist=False, desc=self.desc, **({} if self.stream is None else {"file": self.stream}))
            transform = self.output_transform or (lambda out: {} if _loss(out) is None else {"loss": _loss(out)})
            bar.attach(engine, output_transform=transform)
            return
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Any) -> None:
        """Reset the epoch's loss and clock."""
        self._sum, self._count, self._start = 0.0, 0, time.perf_counter()

    def iteration_completed(self, engine: Any) -> None:
        """Add the iteration's loss to the epoch's mean."""
        output = engine.state.output
        loss = (self.output_transform(output).get("loss") if self.output_transform is not None else _loss(output))
        if loss is not None:
            self._sum += float(loss)
            self._count += 1

    def epoch_completed(self, engine: Any) -> None:
        """Log one line: the epoch, its mean loss and its time."""
        loss = f", loss {self._sum / self._count:.4g}" if self._count else ""
        logger.info("%s: epoch %d/%d%s (%.1f s)", self.desc, engine.state.epoch, engine.state.max_epochs, loss,
                    time.perf_counter() - self._start)
