"""Tests of harmonize.locks: one run per output folder, stale locks of killed runs taken over."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harmonize.locks import LOCK_FILENAME, FolderLock, FolderLockedError, LockHolder, read_holder

ROOT = Path(__file__).resolve().parents[1]
#: A second process that takes the lock, says so, and waits to be killed.
HOLDER = ("import sys, time; from harmonize.locks import FolderLock; "
          "FolderLock(sys.argv[1], 'harmonize preprocess').acquire(); print('locked', flush=True); time.sleep(600)")


def start_holder(folder: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_lock_records_the_holder_and_is_removed_on_release(tmp_path):
    with FolderLock(tmp_path, "harmonize synth") as lock:
        holder = read_holder(tmp_path / LOCK_FILENAME)
        assert holder == lock.holder
        assert (holder.pid, holder.host, holder.command) == (os.getpid(), socket.gethostname(), "harmonize synth")
        with pytest.raises(FolderLockedError, match=rf"is in use by process {os.getpid()} on host .*harmonize synth"):
            FolderLock(tmp_path, "harmonize preprocess").acquire()
    assert not (tmp_path / LOCK_FILENAME).exists()


def test_a_second_process_is_refused_then_a_killed_holder_is_taken_over(tmp_path, caplog):
    process = start_holder(tmp_path)
    try:
        with pytest.raises(FolderLockedError) as err:
            FolderLock(tmp_path, "harmonize preprocess").acquire()
        assert f"in use by process {process.pid} on host {socket.gethostname()!r} ('harmonize preprocess'" in str(err.value)
        assert "Wait for that run to finish, or choose another --out" in str(err.value)
    finally:
        process.send_signal(signal.SIGKILL)  # a killed run: its lock file stays behind
        process.wait()
    assert read_holder(tmp_path / LOCK_FILENAME).pid == process.pid
    with caplog.at_level(logging.WARNING, logger="harmonize.locks"), FolderLock(tmp_path, "harmonize synth") as lock:
        assert read_holder(tmp_path / LOCK_FILENAME) == lock.holder
    assert f"Took over the stale lock {tmp_path / LOCK_FILENAME} of process {process.pid}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left: neither lock nor the stale copy


def test_a_lock_of_another_host_is_not_taken_over(tmp_path):
    other = LockHolder(pid=1, host="node-elsewhere", command="harmonize demo", started="2026-01-01T00:00:00+00:00",
                       token="x")
    (tmp_path / LOCK_FILENAME).write_text(json.dumps(other.__dict__))
    with pytest.raises(FolderLockedError, match="on host 'node-elsewhere'.*cannot tell whether it is still alive; "
                                                f"if you are sure it is not, delete {tmp_path / LOCK_FILENAME}"):
        FolderLock(tmp_path, "harmonize synth").acquire()
    assert read_holder(tmp_path / LOCK_FILENAME) == other


def test_an_empty_lock_is_being_written_then_stale(tmp_path):
    (tmp_path / LOCK_FILENAME).write_text("")
    with pytest.raises(FolderLockedError, match="is being locked by another run right now"):
        FolderLock(tmp_path, "harmonize synth").acquire()
    os.utime(tmp_path / LOCK_FILENAME, (0, 0))  # written long ago: its run died before writing it
    with FolderLock(tmp_path, "harmonize synth") as lock:
        assert read_holder(tmp_path / LOCK_FILENAME) == lock.holder


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="process start times are read from Linux's /proc")
def test_a_process_id_reused_by_a_newer_process_counts_as_gone():
    # this test's own process is alive, but it started long after a lock taken in 2001
    reused = LockHolder(pid=os.getpid(), host=socket.gethostname(), command="harmonize preprocess",
                        started="2001-01-01T00:00:00+00:00", token="old")
    current = LockHolder(pid=os.getpid(), host=socket.gethostname(), command="harmonize preprocess",
                         started="2999-01-01T00:00:00+00:00", token="new")
    assert reused.is_stale() and not current.is_stale()
