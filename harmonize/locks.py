"""One lock per output folder, so that two runs never write into the same folder at once.

A run that writes an output folder first creates :data:`LOCK_FILENAME` in it with ``O_CREAT | O_EXCL`` (atomic
on local file systems and on NFSv3+): the kernel lets exactly one process create it. The file holds the holder's
process id, host name, command and start time, so that a second run fails at once with an error that names
the holder. When the run ends (also on an error or ``KeyboardInterrupt``) the lock file is removed.

A run that was killed (``SIGKILL``, a node that rebooted) leaves its lock file behind. A lock whose holder ran
on this host and whose process no longer exists is *stale*: the next run takes it over and logs a warning. A
lock held on another host cannot be checked from here; the error says so and tells how to remove it by hand.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with FolderLock(folder, "harmonize preprocess") as lock:
    ...         holder = read_holder(Path(folder) / LOCK_FILENAME)
    ...     (holder.command, holder.pid == os.getpid(), (Path(folder) / LOCK_FILENAME).exists())
    ('harmonize preprocess', True, False)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from harmonize.errors import HarmonizeError

__all__ = ["LOCK_FILENAME", "FolderLock", "FolderLockedError", "LockHolder", "read_holder"]

logger = logging.getLogger(__name__)

#: Name of the lock file inside a locked folder.
LOCK_FILENAME = ".harmonize.lock"
#: A lock file still empty (its holder is between creating and writing it) after this many seconds is stale.
EMPTY_LOCK_GRACE_S = 10.0
#: A process that started this many seconds after a lock was taken cannot be its holder (its id was reused).
PID_REUSE_SLACK_S = 2.0
#: Times a stale lock is taken over before giving up (another run may take it over at the same moment).
_ATTEMPTS = 3


class FolderLockedError(HarmonizeError):
    """The output folder is locked by another run."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock (the content of the lock file).

    Attributes:
        pid: process id of the holder.
        host: host name of the holder's machine.
        command: what the holder runs (e.g. ``harmonize preprocess``).
        started: when it took the lock (UTC, ISO 8601).
        token: random, tells two holders with the same pid apart.
    """

    pid: int
    host: str
    command: str
    started: str
    token: str

    def describe(self) -> str:
        """``process 123 on host 'node1' ('harmonize preprocess', since 2026-01-01T00:00:00+00:00)``."""
        return f"process {self.pid} on host {self.host!r} ({self.command!r}, since {self.started})"

    def is_stale(self) -> bool:
        """True when the holder ran on this host and its process is gone (a run that was killed).

        A process id that the system has given to a newer process (started after the lock was taken, as Linux's
        ``/proc`` tells) counts as gone too.
        """
        if self.host != socket.gethostname():
            return False
        if not _pid_alive(self.pid):
            return True
        started = _process_start(self.pid)
        try:
            taken = datetime.fromisoformat(self.started).timestamp()
        except ValueError:
            return False
        return started is not None and started > taken + PID_REUSE_SLACK_S


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end the process there: never call a lock stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the process exists, owned by another user
        return True
    return True


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), from Linux's ``/proc``; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def read_holder(path: str | os.PathLike[str]) -> LockHolder | None:
    """The holder recorded in a lock file, or None when it is missing, empty or not a lock file."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
        return LockHolder(pid=int(content["pid"]), host=str(content["host"]), command=str(content["command"]),
                          started=str(content["started"]), token=str(content["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class FolderLock:
    """An exclusive lock on a folder (see the module docstring); a context manager.

    Args:
        folder: the folder to lock; it must exist.
        command: what the run does, recorded for the error another run shows.

    Raises:
        FolderLockedError: on :meth:`acquire`, when another live run holds the folder.
        HarmonizeError: on :meth:`acquire`, when the lock file cannot be created (no write permission).
    """

    def __init__(self, folder: str | os.PathLike[str], command: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILENAME
        self.command = str(command)
        self.holder: LockHolder | None = None

    def acquire(self) -> LockHolder:
        """Take the lock, taking over a stale one with a warning.

        Returns:
            This run's :class:`LockHolder`.
        """
        me = LockHolder(pid=os.getpid(), host=socket.gethostname(), command=self.command,
                        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        token=secrets.token_hex(8))
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            except OSError as err:
                raise HarmonizeError(
                    f"Cannot create the lock file {self.path}: {err.strerror}. The output folder {self.folder} must "
                    "be writable: choose another --out, or fix its permissions."
                ) from err
            try:
                os.write(fd, (json.dumps(asdict(me)) + "\n").encode())
            finally:
                os.close(fd)
            self.holder = me
            return me
        raise FolderLockedError(f"Could not lock the output folder {self.folder}: other runs keep taking its lock "
                                f"({self.path}). Wait for them to finish, or choose another --out.")

    def _take_over_if_stale(self) -> None:
        holder = read_holder(self.path)
        if holder is None:
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return  # released meanwhile: try again
            if age < EMPTY_LOCK_GRACE_S:
                raise FolderLockedError(
                    f"The output folder {self.folder} is being locked by another run right now ({self.path}); wait "
                    "for that run to finish, or choose another --out.")
        elif not holder.is_stale():
            where = ("" if holder.host == socket.gethostname() else
                     f" It runs on another host, so harmonize cannot tell whether it is still alive; if you are sure "
                     f"it is not, delete {self.path}.")
            raise FolderLockedError(
                f"The output folder {self.folder} is in use by {holder.describe()}. Wait for that run to finish, or "
                f"choose another --out; two runs writing one folder would mix or replace each other's outputs.{where}")
        # stale: move it aside under a unique name, then check that what was moved is the stale lock we read
        aside = self.path.with_name(f"{LOCK_FILENAME}.stale-{secrets.token_hex(6)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else moved it: try again
        moved = read_holder(aside)
        if moved != holder:  # another run took it over between our read and our rename: give theirs back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            raise FolderLockedError(f"The output folder {self.folder} was just locked by another run"
                                    + (f" ({moved.describe()})" if moved else "") + "; choose another --out.")
        aside.unlink(missing_ok=True)
        logger.warning("Took over the stale lock %s of %s, which no longer runs (a killed run?); its partial "
                       "outputs are treated as harmonize's own.", self.path,
                       holder.describe() if holder else "a run that never wrote its lock")

    def release(self) -> None:
        """Remove the lock file, if it is still this run's."""
        if self.holder is None:
            return
        if read_holder(self.path) == self.holder:
            try:
                self.path.unlink()
            except OSError as err:
                logger.warning("Could not remove the lock file %s: %s; remove it by hand.", self.path, err)
        self.holder = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
