"""The shared pieces of the benchmarks: interleaved timer, ratios, memory, markdown report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.common import (
    BenchmarkResult,
    Column,
    Target,
    Workers,
    finish,
    interleaved_times,
    machine_description,
    markdown_table,
    paired_ratio,
    peak_rss_delta_mb,
    ratio_spread,
    write_report,
)


def test_interleaved_times_rotates_the_order_and_discards_warmup():
    calls = []
    variants = {name: (lambda n=name: calls.append(n)) for name in "ABC"}
    times = interleaved_times(variants, repeats=4, warmup=2)
    assert calls[:6] == list("ABCABC")  # two warm-up rounds, not timed
    assert calls[6:] == list("ABC" "BCA" "CAB" "ABC")
    assert {k: len(v) for k, v in times.items()} == {"A": 4, "B": 4, "C": 4}
    assert all(t >= 0 for v in times.values() for t in v)


def test_interleaved_times_calls_synchronize_around_each_sample():
    syncs = []
    interleaved_times({"A": lambda: None}, repeats=3, warmup=0, synchronize=lambda: syncs.append(1))
    assert len(syncs) == 6


@pytest.mark.parametrize("repeats, warmup", [(0, 1), (2, -1)])
def test_interleaved_times_rejects_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match=f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}"):
        interleaved_times({"A": lambda: None}, repeats=repeats, warmup=warmup)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    times = {"plain": [1.0, 2.0, 1.0, 4.0], "fused": [1.1, 2.6, 1.2, 4.0]}
    # per-round ratios 1.1, 1.3, 1.2, 1.0 -> median 1.15 (the ratio of medians would be 1.9 / 1.5)
    assert paired_ratio(times, "fused", "plain") == pytest.approx(1.15)
    assert paired_ratio(times, "plain", "plain") == 1.0


def test_ratio_spread_is_the_quartiles_of_per_round_ratios():
    times = {"plain": [1.0, 2.0, 1.0, 4.0, 1.0], "fused": [1.1, 2.6, 1.2, 4.0, 1.4]}
    # per-round ratios 1.1, 1.3, 1.2, 1.0, 1.4 -> quartiles (inclusive) 1.1 and 1.3
    assert ratio_spread(times, "fused", "plain") == "1.10–1.30"
    assert ratio_spread(times, "fused", "plain", ".3f") == "1.100–1.300"
    assert ratio_spread({"a": [1.0], "b": [2.0]}, "a", "b") == "—"  # one round: no spread


def test_peak_rss_delta_sees_a_large_allocation():
    megabytes = 64

    def work():
        block = np.ones(megabytes * 2**20 // 8)  # touched pages are resident
        assert block.sum() > 0

    assert peak_rss_delta_mb(work) >= 0.8 * megabytes


def test_markdown_table_formats_numbers_missing_values_and_booleans():
    columns = [Column("name", "name"), Column("ratio", "ratio", ".2f"), Column("ok", "ok")]
    rows = [{"name": "fused", "ratio": 1.234, "ok": True}, {"name": "plain", "ratio": float("nan")}]
    assert markdown_table(columns, rows) == (
        "| name | ratio | ok |\n"
        "|---|--:|---|\n"
        "| fused | 1.23 | yes |\n"
        "| plain | — | — |"
    )


def test_target_says_why_only_when_missed():
    assert Target("x <= 1", True, "0.9", "ignored").markdown() == "- x <= 1: **met** (measured 0.9)."
    assert Target("x <= 1", False, "1.5", "Too slow.").markdown() == "- x <= 1: **missed** (measured 1.5). Too slow."


def test_machine_description_names_the_machine_and_versions():
    info = machine_description("cpu")
    assert {"date", "cpu", "cores", "torch threads", "torch", "monai", "python", "device"} <= set(info)
    assert info["device"] == "cpu"
    assert int(info["cores"]) >= 1


def test_write_report_writes_every_table_the_targets_and_the_machine(tmp_path):
    result = BenchmarkResult(
        name="toy",
        title="A toy benchmark",
        description="What it measures.",
        columns=[Column("variant", "variant"), Column("ratio", "ratio", ".2f")],
        rows=[{"variant": "plain", "ratio": 1.0}, {"variant": "fused", "ratio": 1.5}],
        targets=[Target("fused <= 1.3x plain", False, "1.50x", "It was slow.")],
        seconds=12.0,
        settings={"repeats": 3},
    )
    path = write_report(tmp_path / "docs" / "benchmarks.md", [result], command="python -m benchmarks toy",
                        machine={"cpu": "TestCPU", "cores": "2"}, seconds=90.0, shared=True)
    text = path.read_text()
    assert path == tmp_path / "docs" / "benchmarks.md"
    assert "Command: `python -m benchmarks toy` (1.5 min wall)." in text
    assert "| cpu | TestCPU |" in text
    assert "| toy | fused <= 1.3x plain | 1.50x | missed |" in text
    assert "## A toy benchmark" in text
    assert "| fused | 1.50 |" in text
    assert "- fused <= 1.3x plain: **missed** (measured 1.50x). It was slow." in text
    assert "shared with other work" in text
    assert "repeats=3" in text
    assert sorted(p.name for p in path.parent.iterdir()) == ["benchmarks.md"]  # no temporary file left
    assert math.isfinite(result.seconds)


def test_machine_description_names_the_jobs_and_threads_per_job():
    info = machine_description("cpu", Workers(jobs=2, threads=3))
    assert (info["torch threads"], info["parallel jobs"], info["torch threads per job"]) == ("3", "2", "1")


def test_finish_sets_the_wall_time_and_prints_the_table():
    import time

    lines = []
    result = BenchmarkResult(name="toy", title="Toy", description="", columns=[Column("v", "v")], rows=[{"v": 1}])
    assert finish(result, time.perf_counter() - 2.0, lines.append) is result
    assert 2.0 <= result.seconds < 60
    assert lines == ["== Toy (2 s)\n| v |\n|---|\n| 1 |"]


def test_probe_figures_of_an_audit():
    from benchmarks.common import probe_figures

    metrics = {"site_probe_bacc": 0.4, "chance": 0.25, "age_mae": 5.5, "age_probe_r2": 0.7}
    assert probe_figures(metrics) == pytest.approx(
        {"site_probe_bacc": 0.4, "chance": 0.25, "points_above_chance": 15.0, "age_mae": 5.5, "domain_head_acc": None,
         "site_probe_floor": None, "site_probe_conditional": None})
    assert probe_figures({**metrics, "site_probe_floor": 0.3})["site_probe_floor"] == 0.3
    assert probe_figures({**metrics, "domain_head_acc": 0.3})["domain_head_acc"] == 0.3
