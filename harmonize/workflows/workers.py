"""Independent runs (trainings, audits) in parallel worker processes, each with its share of the torch threads.

:class:`Workers` says how many runs go on at once and how many torch CPU threads they share; its :class:`WorkerPool`
starts that many fresh processes (``spawn``: no forked torch thread pools or open files), each with
``threads // jobs`` torch threads, so ``jobs`` workers do not oversubscribe the cores. ``harmonize compare --jobs``
trains its (method, seed) runs this way, and the benchmarks their independent runs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from harmonize.errors import integer_problem, raise_problems

__all__ = ["START_METHOD", "WorkerPool", "Workers", "available_cores"]

#: How worker processes start: a fresh interpreter (no forked torch thread pools or open files).
START_METHOD = "spawn"

_T = TypeVar("_T")


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: Environment variables that set the thread pools of BLAS and OpenMP libraries.
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(threads: int) -> None:
    """Initializer of a worker process: its torch CPU threads, and as many for BLAS and OpenMP.

    Without the BLAS limit every worker's NumPy/SciPy (the probes' logistic regressions) would start one thread per
    core, and ``jobs`` workers would oversubscribe the cores (measured: docs/unlearning.md, "A speed fix found on
    the way").
    """
    for variable in BLAS_THREAD_VARIABLES:  # for libraries loaded after this
        os.environ[variable] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)  # for those already loaded


def _check_counts(owner: str, jobs: object, threads: object, threads_optional: bool = True) -> None:
    """Raise one :class:`~harmonize.errors.ConfigError` naming every count that is not an integer >= 1."""
    problems = []
    if problem := integer_problem("jobs", jobs):
        problems.append(f"{problem}: the number of runs to do at once")
    if not (threads is None and threads_optional) and (problem := integer_problem("threads", threads)):
        problems.append(f"{problem}: the torch CPU threads the runs share")
    raise_problems(owner, problems)


@dataclass(frozen=True)
class Workers:
    """How many independent runs (trainings, audits) go on at once, and the torch threads they share.

    ``jobs`` runs go on at once, each in a worker process started fresh (``spawn``) with
    ``max(1, threads // jobs)`` torch threads, where ``jobs`` is capped by the number of runs; with one job the
    runs go on one after another in this process. A run's figures do not depend on which process trains it (every
    run seeds itself), only on its threads: the same threads per job give the same figures.

    Args:
        jobs: runs at once (>= 1).
        threads: torch CPU threads in all (default: ``torch.get_num_threads()`` of this process).
    """

    jobs: int = 1
    threads: int | None = None

    def __post_init__(self) -> None:
        _check_counts(type(self).__name__, self.jobs, self.threads)

    def total_threads(self) -> int:
        """``threads``, or this process's torch threads when not given."""
        if self.threads is not None:
            return self.threads
        import torch

        return torch.get_num_threads()

    def jobs_for(self, runs: int) -> int:
        """Processes used for ``runs`` runs: ``jobs`` capped by the runs (at least 1)."""
        return max(1, min(self.jobs, runs))

    def threads_per_job(self, runs: int | None = None) -> int:
        """Torch threads of each job: ``max(1, threads // jobs)``, ``jobs`` capped by ``runs`` when given."""
        jobs = self.jobs if runs is None else self.jobs_for(runs)
        return max(1, self.total_threads() // jobs)

    def describe(self, runs: int) -> str:
        """How ``runs`` runs go, for a report: e.g. ``"in 2 parallel processes, each with 1 torch thread"``."""
        jobs, threads = self.jobs_for(runs), self.threads_per_job(runs)
        shown = f"{threads} torch thread{'s' if threads > 1 else ''}"
        return f"one after another, with {shown}" if jobs == 1 else f"in {jobs} parallel processes, each with {shown}"

    def pool(self, runs: int) -> WorkerPool:
        """A :class:`WorkerPool` sized for ``runs`` runs (its processes serve every ``map`` inside its ``with``)."""
        return WorkerPool(self.jobs_for(runs), self.threads_per_job(runs))

    def map(
        self,
        function: Callable[..., _T],
        calls: Sequence[tuple[Any, ...]],
        done: Callable[[int, _T], None] | None = None,
    ) -> list[_T]:
        """:meth:`WorkerPool.map` in a pool sized for ``calls``, closed after."""
        with self.pool(len(calls)) as pool:
            return pool.map(function, calls, done)


class WorkerPool:
    """``jobs`` worker processes (``spawn``), each with ``threads`` torch threads; with one job, this process.

    Use it as a context manager: the processes start on entering and are shut down on leaving (with one job, this
    process's torch threads are set on entering and restored on leaving).

    Args:
        jobs: worker processes (>= 1; 1 runs everything in this process).
        threads: torch threads of each (>= 1).
    """

    def __init__(self, jobs: int, threads: int) -> None:
        _check_counts(type(self).__name__, jobs, threads, threads_optional=False)
        self.jobs = jobs
        self.threads = threads
        self._executor: ProcessPoolExecutor | None = None
        self._threads_before: int | None = None

    def __enter__(self) -> Self:
        if self.jobs > 1:
            context = multiprocessing.get_context(START_METHOD)
            self._executor = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context,
                                                 initializer=_init_worker, initargs=(self.threads,))
        else:
            import torch

            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def map(
        self,
        function: Callable[..., _T],
        calls: Sequence[tuple[Any, ...]],
        done: Callable[[int, _T], None] | None = None,
    ) -> list[_T]:
        """``function(*args)`` for every ``args`` in ``calls``; the results in the order of ``calls``.

        Args:
            function: a module-level function (a worker process imports it by name); its arguments and result
                must pickle.
            calls: the arguments of each run.
            done: called in this process as each run finishes (in the order they finish) with its index and
                result, e.g. to print progress.

        Returns:
            The results, ``results[i]`` from ``calls[i]``.

        Raises:
            RuntimeError: used outside its ``with`` block.
            Exception: the first error of a run, re-raised here (its worker's traceback chained); the runs not
                yet started are cancelled.
        """
        if self._executor is None and self._threads_before is None:
            raise RuntimeError("WorkerPool.map runs inside `with WorkerPool(...) as pool:` only.")
        if self._executor is None:
            results = []
            for index, args in enumerate(calls):
                results.append(function(*args))
                if done is not None:
                    done(index, results[-1])
            return results
        results_by_index: dict[int, _T] = {}
        futures: dict[Future, int] = {self._executor.submit(function, *args): i for i, args in enumerate(calls)}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results_by_index[index] = future.result()
                if done is not None:
                    done(index, results_by_index[index])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return [results_by_index[i] for i in range(len(calls))]
