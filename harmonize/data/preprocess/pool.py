"""Run one preprocessing stage over many scans, in this process or in a pool of worker processes.

:class:`ScanPool` is a :class:`concurrent.futures.ProcessPoolExecutor` of ``jobs`` processes forked from
multiprocessing's fork server (``forkserver``: a clean process that imported the preprocessing once; no forked
torch thread pools or open files of the caller). Each worker computes on one thread (torch and SimpleITK): ``jobs``
workers that each start a thread per core would fight over the cores. The outputs are the bytes of ``--jobs 1``
whatever the threads, since the one thread-dependent sum, the z-normalisation's, is always taken on one thread
(:func:`~harmonize.data.preprocess.steps.intensity_steps`). The stages' results come back in the order of the scans,
whatever order the workers finish in.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import Any, Self

import SimpleITK as sitk
import torch

from harmonize.data.preprocess.layout import Scan
from harmonize.data.preprocess.stages import Outcome
from harmonize.errors import integer_problem, raise_problems
from harmonize.progress import progress as show_progress

__all__ = ["START_METHOD", "ScanPool"]

#: How worker processes start: forked from a server process that has imported the stages once and never ran a
#: torch computation (no forked thread pools or open files of this process; one import, not one per worker).
START_METHOD = "forkserver"
#: Modules the fork server imports before it forks the workers (no MONAI among them: its import would add seconds
#: to the start of every run with jobs > 1).
PRELOAD = ("harmonize.data.preprocess.stages",)


def _init_worker() -> None:
    """Initializer of a worker process: torch and SimpleITK on one thread."""
    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def jobs_problem(jobs: object) -> str | None:
    """The problem with ``jobs``, the number of worker processes (an integer >= 1), or None when it is valid."""
    problem = integer_problem("jobs", jobs)
    return problem and f"{problem}: the worker processes"


class ScanPool:
    """``jobs`` worker processes that run a stage per scan; with one job, everything runs in this process.

    Use it as a context manager: the processes start on first use and are shut down on leaving (pending scans are
    cancelled when the run stops early, e.g. on a full disk or ``KeyboardInterrupt``).

    Args:
        jobs: worker processes (>= 1).

    Raises:
        ConfigError: ``jobs`` < 1.
    """

    def __init__(self, jobs: int = 1) -> None:
        raise_problems(type(self).__name__, [jobs_problem(jobs)])
        self.jobs = int(jobs)
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> Self:
        if self.jobs > 1:
            context = multiprocessing.get_context(START_METHOD)
            context.set_forkserver_preload(list(PRELOAD))
            self._executor = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_init_worker)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)  # the running scans finish, none starts
            self._executor = None

    def map(self, stage: Callable[..., Outcome], scans: Sequence[Scan], *args: Any, desc: str = "",
            progress: bool = False) -> list[Outcome]:
        """``stage(scan, *args)`` for every scan; the outcomes in the order of ``scans``.

        Args:
            stage: a module-level function (a worker imports it by name) returning an :class:`Outcome`.
            scans: the scans.
            *args: the stage's other arguments, the same for every scan (they must pickle).
            desc: what the stage does, for the progress display.
            progress: show progress (:func:`harmonize.progress.progress`).

        Returns:
            The outcomes, ``outcomes[i]`` of ``scans[i]``.

        Raises:
            OutputWriteError: an output could not be written (the run stops at once; later scans are not started).
        """
        if self._executor is None:
            results: Iterator[Outcome] = (stage(scan, *args) for scan in scans)
        else:
            results = self._executor.map(stage, scans, *(itertools.repeat(a, len(scans)) for a in args))
        outcomes = []
        for outcome in show_progress(results, desc, unit="scan", total=len(scans), enabled=progress):
            outcome.raise_write_error()
            outcomes.append(outcome)
        return outcomes
