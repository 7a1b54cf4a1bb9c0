"""Tests of harmonize.progress: a bar on a terminal, a few plain lines in a log file."""

from __future__ import annotations

import io
import logging

import pytest
import torch
from ignite.engine import Engine

from harmonize.errors import ConfigError
from harmonize.progress import ProgressHandler, interactive, progress


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_interactive():
    assert interactive(Terminal()) and not interactive(io.StringIO())
    closed = io.StringIO()
    closed.close()
    assert not interactive(closed)
    assert not interactive(object())  # no isatty at all


def test_log_file_gets_one_line_per_hundred_items(caplog):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="harmonize.progress"):
        items = list(progress(range(250), "preprocess: resample", unit="scan", stream=stream))
    assert items == list(range(250))
    assert stream.getvalue() == ""  # no bar, no carriage return
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("preprocess: resample: 100/250 scans (")
    assert lines[1].startswith("preprocess: resample: 200/250 scans (")
    assert lines[2].startswith("preprocess: resample: 250/250 scans done (")
    assert all("\r" not in line for line in lines)


def test_log_lines_without_length_and_exact_multiple(caplog):
    with caplog.at_level(logging.INFO, logger="harmonize.progress"):
        list(progress(iter(range(4)), "synth", unit="subject", every=2, stream=io.StringIO()))
        list(progress(range(4), "check", unit="scan", every=2, stream=io.StringIO()))
    lines = [r.getMessage().split(" (")[0] for r in caplog.records]
    assert lines == ["synth: 2 subjects", "synth: 4 subjects", "synth: 4 subjects done",
                     "check: 2/4 scans", "check: 4/4 scans done"]


def test_terminal_gets_a_bar_and_disabled_gets_nothing(caplog):
    terminal = Terminal()
    with caplog.at_level(logging.INFO, logger="harmonize.progress"):
        assert list(progress(range(5), "resample", unit="scan", stream=terminal)) == list(range(5))
        assert list(progress(range(5), "off", enabled=False, stream=io.StringIO())) == list(range(5))
    assert "resample: 100%" in terminal.getvalue() and "5/5" in terminal.getvalue() and "\r" in terminal.getvalue()
    assert caplog.records == []
    with pytest.raises(ConfigError, match=r"progress: invalid arguments.\n  - 'every' must be an integer >= 1, got 0"):
        progress(range(3), "x", every=0)


def _engine(losses: list[float]) -> Engine:
    def step(engine, batch):
        return {"loss": torch.tensor(losses[(engine.state.iteration - 1) % len(losses)])}

    return Engine(step)


def test_handler_logs_one_line_per_epoch_with_mean_loss(caplog):
    engine = _engine([1.0, 2.0, 3.0])
    ProgressHandler("brain age (dann)", stream=io.StringIO()).attach(engine)
    with caplog.at_level(logging.INFO, logger="harmonize.progress"):
        engine.run([0, 1, 2], max_epochs=2)
    lines = [r.getMessage().rsplit(" (", 1)[0] for r in caplog.records if r.name == "harmonize.progress"]
    assert lines == ["brain age (dann): epoch 1/2, loss 2", "brain age (dann): epoch 2/2, loss 2"]


def test_handler_on_terminal_draws_ignite_bar(caplog):
    terminal = Terminal()
    engine = _engine([0.5])
    ProgressHandler("ft", output_transform=lambda out: {"loss": float(out["loss"])}, stream=terminal).attach(engine)
    with caplog.at_level(logging.INFO, logger="harmonize.progress"):
        engine.run([0, 1], max_epochs=1)
    assert "ft" in terminal.getvalue() and "loss=0.5" in terminal.getvalue()
    assert [r for r in caplog.records if r.name == "harmonize.progress"] == []
