"""``python -m benchmarks``: argument checks, and one benchmark run end to end into a report."""

from __future__ import annotations

import json

import pytest

from benchmarks.__main__ import main
from benchmarks.common import render_report
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
    out.write_text(render_report([], "python -m benchmarks old", {}, 1.0) + "old content\n")  # an earlier run's
    (tmp_path / "notes.md").write_text("the user's\n")
    assert main(["preprocess", "--quick", "--jobs", "2", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "old content" not in text and (tmp_path / "notes.md").read_text() == "the user's\n"
    assert json.loads((tmp_path / ".harmonize-outputs.json").read_text())["files"] == ["benchmarks.md"]
    assert "Command: `python -m benchmarks preprocess --quick --jobs 2 --threads 1 --out " in text
    assert "## Preprocessing: first run against the cached second run" in text
    assert "| torch threads | 1 |" in text
    assert "| parallel jobs | 2 |" in text and "| torch threads per job | 1 |" in text
    assert "**This is a `--quick` run**" in text
    assert f"report written to {out}" in capsys.readouterr().out


def test_out_never_replaces_a_file_of_the_user_s(tmp_path, capsys):
    """--out is replaced only when it is a report of an earlier run; the user's own file there is kept."""
    out = tmp_path / "results.md"
    out.write_text("my results\n")
    assert main(["preprocess", "--quick", "--threads", "1", "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"error: The output directory {tmp_path} holds 1 file(s) that harmonize did not write, where this run writes "
        "its outputs: results.md. --overwrite replaces only files harmonize wrote (listed in "
        ".harmonize-outputs.json); move these away, or choose another --out.\n")
    assert out.read_text() == "my results\n"
    assert main(["preprocess", "--quick", "--out", str(tmp_path)]) == 1
    assert "is a folder; give the path of a file" in capsys.readouterr().err


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


def test_update_replaces_only_the_sections_run(tmp_path, monkeypatch):
    """--update puts the run's section and target rows into the report; the other sections stay byte for byte."""
    from benchmarks.common import BenchmarkResult, Column, Target

    smallest = PreprocessSettings.for_size("smallest")
    monkeypatch.setattr(PreprocessSettings, "for_size", classmethod(lambda cls, size: smallest))
    kept = BenchmarkResult("overhead", "Overhead of unlearning per training iteration", "Kept as it was.",
                           [Column("x", "x")], [{"x": 1}], [Target("fused <= 1.3x plain", True, "1.01x")])
    old = BenchmarkResult("preprocess", "Preprocessing: first run against the cached second run", "old figures",
                          [Column("x", "x")], [{"x": 2}], [Target("old preprocess target", False, "9x")])
    out = tmp_path / "benchmarks.md"
    before = render_report([kept, old], "python -m benchmarks", {"date": "then"}, 60.0)
    before = before.replace("</sub>\n\n## Preprocessing", "</sub>\n## Preprocessing")  # as a hand-made edit left it
    out.write_text(before)
    assert main(["preprocess", "--update", "--threads", "1", "--shared-machine", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith(before.split("## Targets")[0])  # the command and machine of the run at the top
    kept_part = before[before.index("## Overhead"):before.index("## Preprocessing")]
    assert kept_part.endswith("</sub>\n") and kept_part + "## Preprocessing" in text  # byte for byte
    assert "old figures" not in text and "old preprocess target" not in text
    assert text.count("## Preprocessing: first run against the cached second run") == 1
    assert text.index("## Overhead") < text.index("## Preprocessing")
    targets = text.split("## Targets")[1].split("\n## ")[0]
    assert "| overhead | fused <= 1.3x plain | 1.01x | met |" in targets
    assert sum(line.startswith("| preprocess |") for line in targets.splitlines()) == 1
    assert ("_This section was re-measured on its own: `python -m benchmarks preprocess --update --threads 1 "
            "--shared-machine --out ") in text
    assert "; other work shared the machine). The other sections come from the run named at the top; the " \
           "preprocess rows of the targets table come from this run._" in text


def test_update_refuses_a_quick_run(capsys):
    assert main(["scale", "--quick", "--update"]) == 2
    assert "--update puts this run's sections into a report of measurements, but --quick" in capsys.readouterr().err
