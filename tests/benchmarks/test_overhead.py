"""The overhead benchmark at its smallest size: structure and sanity of the rows, the reference loop, targets."""

from __future__ import annotations

import io
import json
import math
import threading
from dataclasses import asdict, replace

import pytest
import torch

from benchmarks.common import Workers
from benchmarks.overhead import (
    VARIANTS,
    OverheadSettings,
    _memory,
    _memory_child,
    _targets,
    build_trainer,
    peak_memory_mb,
    run_overhead,
)

SMALLEST = OverheadSettings.for_size("smallest")


def test_rows_hold_every_variant_with_positive_ratios():
    lines = []
    result = run_overhead(SMALLEST, report=lines.append)
    assert [r["variant"] for r in result.rows] == list(VARIANTS)
    for row in result.rows:
        assert row["ms_per_iteration"] > 0
        assert row["time_ratio"] > 0 and math.isfinite(row["time_ratio"])
        assert row["peak_mb"] is None  # memory is off at the smallest size
        low, high = map(float, row["time_ratio_spread"].split("–"))  # 2 repeats: the quartiles of 2 ratios
        assert 0 < low <= round(row["time_ratio"], 2) <= high  # the spread is printed to 2 decimals
    assert result.rows[0]["time_ratio"] == 1.0  # plain against itself, round by round
    assert [t.name for t in result.targets] == ["fused <= 1.3x plain", "alternating <= 2.2x plain"]
    assert "| variant | ms / iteration |" in lines[0]


def test_peak_memory_of_a_variant_is_a_finite_size():
    peak = peak_memory_mb("plain", replace(SMALLEST, memory_iterations=1), threads=1)
    assert peak >= 0 and math.isfinite(peak)


def test_memory_processes_run_jobs_at_a_time_with_their_threads(monkeypatch):
    both_running = threading.Barrier(2, timeout=30)  # broken (an error) unless two measurements overlap
    calls = []

    def fake_measure(variant, settings, device, sites=None, threads=None):
        calls.append((variant, threads))
        both_running.wait()
        return float(len(variant))

    monkeypatch.setattr("benchmarks.overhead._memory_in_fresh_process", fake_measure)
    peaks = _memory(["plain", "alternating"], SMALLEST, "cpu", Workers(jobs=2, threads=2))
    assert peaks == {"plain": 5.0, "alternating": 11.0}  # in the variants' order
    assert sorted(calls) == [("alternating", 1), ("plain", 1)]  # max(1, 2 // 2) threads each


def test_memory_process_reads_its_job_from_stdin_and_prints_the_peak(monkeypatch, capsys):
    # what _memory_in_fresh_process runs in the new process (started there with `python -c`)
    job = {"variant": "fused", "settings": asdict(replace(SMALLEST, memory_iterations=1)), "device": "cpu",
           "threads": 1, "sites": 3}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(job)))
    _memory_child()
    peak = json.loads(capsys.readouterr().out)["peak_mb"]
    assert peak >= 0 and math.isfinite(peak)


def test_three_pass_reference_updates_the_network_and_the_head():
    trainer = build_trainer("three_pass", SMALLEST)
    loop = trainer._process_function  # ignite keeps the iteration_update here: the reference loop
    head_before = [p.detach().clone() for p in loop.head.parameters()]
    net_before = [p.detach().clone() for p in trainer.network.parameters()]
    trainer.run()
    assert any(not torch.equal(a, b) for a, b in zip(head_before, loop.head.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(net_before, trainer.network.parameters()))
    assert all(p.requires_grad for p in loop.head.parameters())  # unfrozen after the confusion step
    assert torch.isfinite(trainer.state.output["loss"])


def test_handler_variants_attach_the_handler_in_their_mode():
    trainer = build_trainer("alternating", SMALLEST)
    trainer.run()
    assert trainer.state.unlearning_phase == "alternating"
    assert 0.0 <= trainer.state.domain_acc_site <= 1.0


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="Unknown variant 'fast'; choose from"):
        build_trainer("fast", SMALLEST)


def test_targets_explain_a_miss_with_the_measured_figures():
    rows = [{"variant": "plain", "time_ratio": 1.0}, {"variant": "fused", "time_ratio": 1.42},
            {"variant": "alternating", "time_ratio": 2.1}, {"variant": "three_pass", "time_ratio": 2.9}]
    fused, alternating = _targets(rows)
    assert (fused.met, fused.measured) == (False, "1.42x")
    assert "the extra 42%" in fused.why and "three-pass loop costs 2.90x" in fused.why
    assert (alternating.met, alternating.why) == (True, "")
