"""Workers: independent runs in parallel processes, each with its share of the torch threads, results in order."""

from __future__ import annotations

import math
import os

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.workflows.workers import WorkerPool, Workers


@pytest.mark.parametrize(
    "jobs, threads, runs, expected_jobs, expected_threads",
    [(2, 2, 10, 2, 1), (4, 2, 10, 4, 1), (2, 8, 10, 2, 4), (16, 16, 3, 3, 5), (1, 3, 5, 1, 3), (2, 2, 1, 1, 2)],
)
def test_threads_per_job_share_the_threads_among_the_jobs_used(jobs, threads, runs, expected_jobs, expected_threads):
    workers = Workers(jobs=jobs, threads=threads)
    assert workers.jobs_for(runs) == expected_jobs
    assert workers.threads_per_job(runs) == expected_threads
    assert workers.threads_per_job() == max(1, threads // jobs)


@pytest.mark.parametrize("jobs, threads, message", [
    (0, None, r"'jobs' must be an integer >= 1, got 0 \(int\): the number of runs"),
    (2, 0, r"'threads' must be an integer >= 1, got 0 \(int\): the torch CPU threads"),
    ("two", None, r"'jobs' must be an integer >= 1, got 'two' \(str\)"),
])
def test_workers_refuse_bad_counts(jobs, threads, message):
    with pytest.raises(ConfigError, match=message):
        Workers(jobs=jobs, threads=threads)


def test_bad_counts_are_all_named_at_once():
    for build in (lambda: Workers(jobs=0, threads=1.5), lambda: WorkerPool(0, 1.5)):
        with pytest.raises(ConfigError) as caught:
            build()
        assert caught.value.problems == [
            "'jobs' must be an integer >= 1, got 0 (int): the number of runs to do at once",
            "'threads' must be an integer >= 1, got 1.5 (float): the torch CPU threads the runs share",
        ]
    with pytest.raises(ConfigError, match=r"'threads' must be an integer >= 1, got None"):
        WorkerPool(2, None)


def test_workers_describe_how_the_runs_go():
    assert Workers(jobs=2, threads=2).describe(10) == "in 2 parallel processes, each with 1 torch thread"
    assert Workers(jobs=4, threads=8).describe(2) == "in 2 parallel processes, each with 4 torch threads"
    assert Workers(jobs=1, threads=1).describe(10) == "one after another, with 1 torch thread"


def test_one_job_runs_here_with_its_threads_and_restores_them():
    before = torch.get_num_threads()
    seen = []
    results = Workers(jobs=1, threads=1).map(
        torch.get_num_threads, [(), ()], done=lambda i, r: seen.append((i, r, os.getpid())))
    assert results == [1, 1]
    assert seen == [(0, 1, os.getpid()), (1, 1, os.getpid())]
    assert torch.get_num_threads() == before


def test_parallel_jobs_run_in_other_processes_with_their_threads_and_keep_the_order():
    workers = Workers(jobs=2, threads=4)
    with workers.pool(runs=3) as pool:
        threads = pool.map(torch.get_num_threads, [(), (), ()])
        pids = pool.map(os.getpid, [(), (), ()])
        finished = []
        # eval (a builtin, so a fresh process can unpickle it): the first run sleeps, so it finishes after the others
        values = pool.map(eval, [("__import__('time').sleep(1.0) or 'slow'",), ("'a'",), ("'b'",)],
                          done=lambda i, r: finished.append(i))
    assert threads == [2, 2, 2]  # max(1, 4 // 2) in each worker
    assert os.getpid() not in pids and len(set(pids)) <= 2
    assert values == ["slow", "a", "b"]  # the order of the calls, not of finishing
    assert sorted(finished) == [0, 1, 2]  # each reported once, as it finished


def test_an_error_in_a_worker_is_raised_here():
    with pytest.raises(ValueError, match="math domain error"):
        Workers(jobs=2, threads=2).map(math.sqrt, [(4.0,), (-1.0,)])


def test_a_pool_maps_only_inside_its_with_block():
    with pytest.raises(RuntimeError, match=r"WorkerPool.map runs inside `with WorkerPool\(...\) as pool:` only"):
        WorkerPool(jobs=1, threads=1).map(math.sqrt, [(4.0,)])
