"""The scale benchmark at its smallest size: memory per dataset cache, and parallel and sharded preprocessing."""

from __future__ import annotations

import pytest

import benchmarks.scale
from benchmarks.scale import ScaleSettings, dataset_peak_mb, run_scale


def test_every_cache_and_preprocessing_run_is_measured(tmp_path, monkeypatch):
    in_this_process = []

    def here(manifest, scans, cache, cache_dir, loader_workers):  # a fresh process each costs seconds to start
        in_this_process.append((scans, cache))
        return dataset_peak_mb(str(manifest), scans, cache, str(cache_dir), loader_workers)

    monkeypatch.setattr(benchmarks.scale, "_memory_in_fresh_process", here)
    result = run_scale(ScaleSettings.for_size("smallest"), work_dir=tmp_path, report=lambda line: None)
    assert in_this_process == [(8, "memory"), (8, "disk"), (8, "none"), (16, "memory"), (16, "disk"), (16, "none")]
    memory = [r for r in result.rows if r["measure"] == "memory"]
    assert all(r["peak_mb"] >= 0 and r["mb_per_scan"] == r["peak_mb"] / r["scans"] for r in memory)
    assert len(list((tmp_path / "scale" / "cache-disk-16" / "items").glob("*.pt"))) == 16  # the disk cache filled
    assert not (tmp_path / "scale" / "cache-none-16" / "items").exists()
    copies = sorted(p.name for p in (tmp_path / "scale" / "copies" / "images").glob("*.nii.gz"))
    assert len(copies) == 16 and copies[0] == "site0-sub000-copy0.nii.gz"  # 6 generated scans, each row its own file
    runs = [r for r in result.rows if r["measure"] == "preprocess"]
    assert [r["run"] for r in runs] == ["--jobs 1", "--jobs 2", "fit, shards 1/2 and 2/2 one after another, merge"]
    assert [r["same_bytes"] for r in runs] == [None, True, True] and runs[0]["speedup"] == 1.0
    assert all(r["scans"] == 6 and r["load"] >= 0 for r in runs)  # the first 6 copies, and the load beside
    assert len(list((tmp_path / "scale" / "jobs1" / "images").glob("*.nii.gz"))) == 6
    names = [t.name for t in result.targets]
    assert names[2:4] == ["check: --jobs 2 writes the same bytes as --jobs 1",
                          "check: fit + 2 shards + merge write the same manifest and files as one run"]
    assert result.targets[2].met and result.targets[3].met


def test_more_scans_preprocessed_than_copied_is_refused():
    with pytest.raises(ValueError, match="preprocess_scans must lie in \\[1, 16\\]"):
        ScaleSettings(scans=(8, 16), preprocess_scans=17)
