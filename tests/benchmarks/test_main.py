"""``python -m benchmarks``: argument checks, and one benchmark run end to end into a report."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import main
from benchmarks.preprocess import PreprocessSettings


def test_unknown_benchmark_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["overheads"])
    assert exit_info.value.code == 2
    assert "unknown benchmark(s) ['overheads']; choose from ['overhead'" in capsys.readouterr().err


def test_bad_thread_count_is_refused(capsys):
    assert main(["preprocess", "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_bad_job_count_is_refused(capsys):
    assert main(["preprocess", "--jobs", "0"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err


def test_a_quick_run_rewrites_the_report(tmp_path, capsys, monkeypatch):
    smallest = PreprocessSettings.for_size("smallest")
    monkeypatch.setattr(PreprocessSettings, "for_size", classmethod(lambda cls, size: smallest))
    out = tmp_path / "benchmarks.md"
    out.write_text("old content\n")
    assert main(["preprocess", "--quick", "--jobs", "2", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "old content" not in text
    assert "Command: `python -m benchmarks preprocess --quick --jobs 2 --threads 1 --out " in text
    assert "## Preprocessing: first run against the cached second run" in text
    assert "| torch threads | 1 |" in text
    assert "| parallel jobs | 2 |" in text and "| torch threads per job | 1 |" in text
    assert "**This is a `--quick` run**" in text
    assert f"report written to {out}" in capsys.readouterr().out


def test_a_stopped_run_leaves_the_tables_it_finished(tmp_path, monkeypatch):
    import benchmarks.recon

    smallest = PreprocessSettings.for_size("smallest")
    monkeypatch.setattr(PreprocessSettings, "for_size", classmethod(lambda cls, size: smallest))

    def broken(*args, **kwargs):
        raise RuntimeError("stopped")

    monkeypatch.setattr(benchmarks.recon, "run_recon", broken)
    out = tmp_path / "benchmarks.md"
    with pytest.raises(RuntimeError, match="stopped"):
        main(["preprocess", "recon", "--quick", "--threads", "1", "--out", str(out)])
    text = out.read_text()
    assert "**Incomplete run**: 1 of 2 benchmarks finished when this file was written." in text
    assert "## Preprocessing: first run against the cached second run" in text
