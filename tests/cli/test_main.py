"""The CLI's one error boundary: a user's or the environment's error is one ``error:`` paragraph (exit 1), a bug
keeps its traceback plus one line saying where to report it, a usage error exits 2."""

from __future__ import annotations

import errno

import pytest

from harmonize.cli import main as cli_main
from harmonize.cli import synth
from harmonize.cli.main import main
from harmonize.errors import HarmonizeError


def _failing(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make ``harmonize synth`` raise ``error`` (subcommands are registered when ``main`` builds its parser)."""

    def run(_args):
        raise error

    monkeypatch.setattr(synth, "run", run)


@pytest.mark.parametrize(
    "case, error, expected",
    [
        ("harmonize error", HarmonizeError("row 2: bad value; fix it"), "error: row 2: bad value; fix it"),
        ("permission", PermissionError(errno.EACCES, "Permission denied", "/data/out"),
         "error: '/data/out': permission denied: choose a folder you can write to"),
        ("disk full", OSError(errno.ENOSPC, "No space left on device", "/data/out/a.nii.gz"),
         "error: '/data/out/a.nii.gz': no space left on the disk: free some space, or choose an --out on another"),
        ("name too long", OSError(errno.ENAMETOOLONG, "File name too long", "/o/" + "s" * 300),
         "the file name is too long for the file system: shorten it"),
        ("below a file", NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/notes.txt/out"),
         "error: '/data/notes.txt/out': a part of the path is a file, not a folder"),
        ("nul byte", ValueError("embedded null byte"),
         "error: a path holds a NUL byte (\\x00) (argument '/tmp/a\\x00b'), which no file name can hold"),
        ("numpy memory", MemoryError("Unable to allocate 7.45 GiB for an array with shape (1000, 1000, 1000)"),
         "error: out of memory: an allocation of 7.45 GiB failed"),
        ("torch memory", RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                                      "8589934592 bytes. Error code 12"),
         "error: out of memory: an allocation of 8.0 GiB failed"),
        ("no cuda", AssertionError("Torch not compiled with CUDA enabled"),
         "error: the device asked for is not available (Torch not compiled with CUDA enabled). This machine has: cpu"),
    ],
)
def test_user_and_environment_errors_are_one_paragraph(monkeypatch, capsys, case, error, expected):
    _failing(monkeypatch, error)
    assert main(["synth", "--out", "/tmp/a\0b"]) == 1
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err and err.count("error:") == 1
    if "memory" in case:
        assert "Ask for less: a smaller --shape or fewer --sites" in err


def test_a_bug_keeps_its_traceback_and_says_where_to_report(monkeypatch, capsys):
    _failing(monkeypatch, KeyError("internal"))
    assert main(["synth", "--out", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "KeyError: 'internal'" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: this is a bug in harmonize") and "unexpected KeyError in 'harmonize synth'" in last
    assert cli_main.BUG_REPORT in last


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch, capsys):
    _failing(monkeypatch, HarmonizeError("bad input"))
    assert main(["--debug", "synth", "--out", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("error: bad input")


def test_real_path_errors_exit_1_without_traceback(tmp_path, capsys):
    """Faults met for real: --out below an existing file, a path component too long, a NUL byte."""
    (tmp_path / "notes.txt").write_text("mine")
    cases = [
        (str(tmp_path / "notes.txt" / "out"), str(tmp_path / "notes.txt")),
        (str(tmp_path / ("s" * 300) / "out"), "too long"),
        (str(tmp_path / "a\0b"), "NUL byte"),
    ]
    for out, expected in cases:
        assert main(["synth", "--out", out, "--sites", "2", "--subjects-per-site", "3", "--shape", "16"]) == 1
        err = capsys.readouterr().err
        assert "error:" in err and expected in err and "Traceback" not in err, err
    assert (tmp_path / "notes.txt").read_text() == "mine"
