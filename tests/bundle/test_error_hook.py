"""install_error_hook: a HarmonizeError anywhere in an uncaught exception's chain is one `error:` paragraph."""

from __future__ import annotations

import sys

import pytest

from harmonize.bundle.error_hook import find_harmonize_error, install_error_hook
from harmonize.errors import HarmonizeError


def _chained() -> RuntimeError:
    try:
        try:
            raise HarmonizeError("scan.nii.gz does not exist.", problems=["give another file"])
        except HarmonizeError as inner:
            raise RuntimeError("Failed to instantiate dataset") from inner
    except RuntimeError as outer:
        return outer


def test_find_walks_causes_and_contexts():
    error = _chained()
    assert str(find_harmonize_error(error)) == "scan.nii.gz does not exist.\n  - give another file"
    assert find_harmonize_error(ValueError("a bug")) is None
    looped = ValueError("loop")
    looped.__context__ = looped
    assert find_harmonize_error(looped) is None


@pytest.fixture()
def hook(monkeypatch):
    calls = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: calls.append(args))
    install_error_hook()
    install_error_hook()  # installed once
    return calls


def test_a_user_error_is_one_paragraph_and_a_bug_keeps_its_traceback(hook, capsys):
    error = _chained()
    sys.excepthook(type(error), error, error.__traceback__)
    assert capsys.readouterr().err == "error: scan.nii.gz does not exist.\n  - give another file\n"
    assert hook == []
    bug = KeyError("x")
    sys.excepthook(KeyError, bug, None)
    assert hook == [(KeyError, bug, None)]  # the previous hook (the traceback) sees the bug
