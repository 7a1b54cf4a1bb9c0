"""The preprocessing benchmark at its smallest size: a first run, then every scan from the cache."""

from __future__ import annotations

from benchmarks.preprocess import PreprocessSettings, run_preprocess


def test_second_run_takes_every_scan_from_the_cache(tmp_path):
    result = run_preprocess(PreprocessSettings.for_size("smallest"), work_dir=tmp_path, report=lambda line: None)
    first, cached = result.rows
    assert (first["run"], first["volumes"], first["processed"], first["cached"]) == ("first", 6, 6, 0)
    assert (cached["run"], cached["processed"], cached["cached"]) == ("cached", 0, 6)
    assert first["speedup"] == 1.0
    assert cached["speedup"] > 0 and cached["volumes_per_second"] > 0
    (target,) = result.targets
    assert target.met
    assert (tmp_path / "preprocess" / "preprocessed0" / "manifest.csv").is_file()  # work_dir keeps the outputs
