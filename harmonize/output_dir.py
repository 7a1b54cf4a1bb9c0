"""Output folders that never lose a user's file: locked while written, with a record of what harmonize wrote.

Every command that writes an output folder (``synth``, ``preprocess``, ``compare``, ``audit``, ``demo``) claims
it through :class:`OutputDir`:

1. The path is checked: not a file, not below a file, creatable and writable (each with an error naming it).
2. The folder is locked (:class:`~harmonize.locks.FolderLock`): a second run fails at once, naming the first.
3. :data:`RECORD_FILENAME` in the folder lists every file harmonize wrote there (relative paths). A file in a
   sub-folder with a record of its own (``demo``'s ``cohort/``) counts as harmonize's when that record lists it.
   Temporary files of :mod:`harmonize.io` count as harmonize's too.
4. A non-empty folder is refused unless ``overwrite`` (or ``reuse``, a cache such as ``preprocess``'s).
   With ``overwrite``, only recorded files are removed; a file harmonize did not write is refused by name where
   the run writes (``reserved`` top-level names) and kept elsewhere (a top-level entry of the user's outside
   ``reserved`` is kept whole, without walking it: a home folder as ``--out`` stays cheap).
5. When the run ends, every new file is added to the record (atomically); a run that leaves nothing of
   harmonize's leaves no record either, and a failed run that wrote nothing removes the folder it created. The record is marked incomplete while the run writes: after a killed
   run, the next one counts that run's files as harmonize's (every file that was not already there when it
   started).

A command that writes a single file into a folder of the user's (``manifest from-bids``, the benchmarks' report)
claims it with :func:`output_file`: the rest of the folder is the user's and is kept, and an existing file of
that name is replaced only when harmonize wrote it.

Writers that add files one by one to a folder they do not claim (the bundles' inference writers) use
:func:`check_replaceable` before writing (an existing file is replaced only when a record lists it) and
:func:`record_written` after.

A nested claim of a folder this process already holds (``demo`` runs ``compare`` into its own folder) is
allowed and does nothing: the outer claim keeps the lock and the record.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, TypeVar

from harmonize.errors import HarmonizeError
from harmonize.io import TMP_GLOB, write_json_atomic
from harmonize.locks import LOCK_FILENAME, FolderLock

__all__ = ["RECORD_FILENAME", "OutputDir", "OutputDirError", "check_output_path", "check_replaceable",
           "hold_output_dir", "output_file", "record_written", "releases_output_dirs"]

logger = logging.getLogger(__name__)

#: The record of the files harmonize wrote into an output folder.
RECORD_FILENAME = ".harmonize-outputs.json"
#: Files of the bookkeeping itself (never outputs, never the user's).
BOOKKEEPING = frozenset({RECORD_FILENAME, LOCK_FILENAME})
#: Files named in an error message before "and N more".
SHOWN = 5
#: Folders held by this process: resolved path -> the claim that holds it.
_HELD: dict[Path, OutputDir] = {}
#: Claims made by :func:`hold_output_dir` inside each running :func:`releases_output_dirs` call.
_RUNS: list[list[OutputDir]] = []

F = TypeVar("F", bound=Callable[..., Any])


class OutputDirError(HarmonizeError):
    """An output folder that cannot be used: a file, below a file, not writable, or holding the user's files."""


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _check_nul(out: Path) -> None:
    if "\x00" in str(out):
        raise OutputDirError(f"The output path {str(out)!r} holds a NUL byte, which no path can hold. Choose another "
                             "--out.")


def check_output_path(out: Path) -> bool:
    """Check that ``out`` can be an output folder and create it.

    Returns:
        True when the folder was created here (it did not exist).

    Raises:
        OutputDirError: ``out`` is a file, lies below a file, or cannot be created or written, naming the path.
    """
    _check_nul(out)
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"The output path {out} is a file, not a folder. Choose another --out.")
    ancestor = out
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputDirError(f"The output folder {out} lies below {ancestor}, which is a file, not a folder. Choose "
                             "an --out whose parents are folders.")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputDirError(f"Cannot create the output folder {out}: {err.strerror or err}. Choose an --out in a "
                             "folder you can write to.") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputDirError(f"No permission to write into the output folder {out}. Choose another --out, or make "
                             "it writable (chmod u+w).")
    return created


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / RECORD_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None


def _is_bookkeeping(name: str) -> bool:
    return name in BOOKKEEPING or name.startswith(LOCK_FILENAME + ".stale-")


def _walk(out: Path, skip_top: Collection[str] = ()) -> tuple[set[str], set[str]]:
    """All files below ``out`` (relative POSIX paths, bookkeeping left out), and those recorded as harmonize's.

    Top-level entries named in ``skip_top`` (the user's, where the run does not write) are not descended into.
    """
    files: set[str] = set()
    owned: set[str] = set()
    for root, dirs, names in os.walk(out):
        here = Path(root)
        if here == out:
            dirs[:] = [d for d in dirs if d not in skip_top]
            names = [n for n in names if n not in skip_top]
        dirs.sort()
        prefix = here.relative_to(out)
        if here != out and RECORD_FILENAME in names:
            nested = _read_record(here) or {}
            owned.update((prefix / str(f)).as_posix() for f in nested.get("files", []))
        for name in names:
            if _is_bookkeeping(name):
                continue
            relative = (prefix / name).as_posix()
            files.add(relative)
            if fnmatch(name, TMP_GLOB):
                owned.add(relative)
    return files, owned & files


def _remove(out: Path, relatives: Iterable[str]) -> None:
    """Delete files, then the folders they leave empty (up to ``out``, which stays)."""
    parents: set[Path] = set()
    for relative in relatives:
        path = out / relative
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            continue
        parents.update(p for p in path.parents if p != out and out in p.parents)
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        try:
            remaining = {p.name for p in folder.iterdir()}
        except OSError:
            continue
        if remaining <= {RECORD_FILENAME}:
            (folder / RECORD_FILENAME).unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass


def _rmdir_quietly(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


class OutputDir:
    """Claim an output folder for one run (see the module docstring); a context manager returning its path.

    Args:
        path: the output folder.
        command: what writes it (named in the lock, for another run's error).
        overwrite: remove the files harmonize wrote there before; without it a non-empty folder is refused.
        inputs: files the run reads: the output may never be their folder, and they are never removed.
        reserved: top-level names the run writes (``("images", "manifest.csv")``): a file harmonize did not
            write is refused under these names and kept elsewhere. ``None``: every such file is refused.
        reuse: given the folder, True when its content is a cache this run may reuse (then it is not refused
            without ``overwrite``, and nothing is removed).
        known_outputs: given the folder, further files harmonize wrote there (an output written before records
            existed, e.g. a cohort listed by its ``cohort.json``).
        discard_on_error: when the run fails, remove what it wrote (and the folder, if it created it).

    Raises:
        OutputDirError: see :func:`check_output_path`; the folder holds an input; it is not empty (without
            ``overwrite``); or files harmonize did not write lie where the run writes.
        FolderLockedError: another run holds the folder.
    """

    def __init__(self, path: str | os.PathLike[str], command: str, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = (), reserved: Collection[str] | None = None,
                 reuse: Callable[[Path], bool] | None = None,
                 known_outputs: Callable[[Path], Iterable[Path]] | None = None,
                 discard_on_error: bool = False) -> None:
        self.path = Path(path).expanduser().absolute()
        self.command = command
        self.overwrite = overwrite
        self.inputs = [Path(p).expanduser().absolute() for p in inputs]
        self.reserved = None if reserved is None else frozenset(reserved)
        self.reuse = reuse
        self.known_outputs = known_outputs
        self.discard_on_error = discard_on_error
        self.nested = False
        self.created = False
        self.kept: set[str] = set()
        self.skip_top: set[str] = set()
        self._lock: FolderLock | None = None

    # -- claim ------------------------------------------------------------------------------------------------
    def claim(self) -> Path:
        """Check, lock and prepare the folder; returns its path."""
        out = self.path
        _check_nul(out)
        for given in self.inputs:
            if given.resolve().parent == out.resolve():
                raise OutputDirError(
                    f"Output directory {out} holds the input {given}: outputs would be written among your data. "
                    "Choose an --out outside the input's folder.")
        key = out.resolve()
        if key in _HELD:
            self.nested = True
            return out
        self.created = check_output_path(out)
        self._lock = FolderLock(out, self.command)
        self._lock.acquire()
        try:
            self._prepare()
        except BaseException:
            self._lock.release()
            if self.created:
                (out / RECORD_FILENAME).unlink(missing_ok=True)
                _rmdir_quietly(out)
            raise
        _HELD[key] = self
        return out

    def _owned(self, files: set[str], owned: set[str], record: dict[str, Any] | None) -> set[str]:
        if record is not None:
            owned |= {str(f) for f in record["files"]} & files
            if not record.get("complete", True):  # a killed run: everything that was not there before it
                owned |= files - {str(f) for f in record.get("kept", [])}
        if self.known_outputs is not None:
            root = self.path.resolve()
            for path in self.known_outputs(self.path):
                try:
                    owned.add(Path(path).resolve().relative_to(root).as_posix())
                except ValueError:
                    continue
            owned &= files
        return owned

    def _holds_input(self, path: Path) -> bool:
        """Whether ``path`` is an input, or lies in an input's folder below the output (e.g. a preprocessed
        manifest's images in ``OUT/preprocessed/``): ``--overwrite`` never removes what the run reads."""
        resolved = path.resolve()
        out = self.path.resolve()
        for given in self.inputs:
            source = given.resolve()
            if resolved == source or (source.parent != out and source.parent in resolved.parents):
                return True
        return False

    def _untouched_entries(self, record: dict[str, Any] | None) -> set[str]:
        """Top-level entries of the user's where this run does not write: kept whole, never walked."""
        if self.reserved is None:
            return set()
        recorded = {PurePosixPath(str(f)).parts[0] for f in (record or {}).get("files", [])}
        killed = record is not None and not record.get("complete", True)
        kept_before = {PurePosixPath(str(f)).parts[0] for f in (record or {}).get("kept", [])}
        return {p.name for p in self.path.iterdir() if not _is_bookkeeping(p.name) and p.name not in self.reserved
                and p.name not in recorded and (not killed or p.name in kept_before)}

    def _prepare(self) -> None:
        out = self.path
        record = _read_record(out)
        self.skip_top = self._untouched_entries(record)
        files, owned = _walk(out, self.skip_top)
        owned = self._owned(files, owned, record)
        walked_foreign = files - owned
        foreign = sorted(walked_foreign | {n + "/" if (out / n).is_dir() else n for n in self.skip_top})
        reusable = bool(files or self.skip_top) and self.reuse is not None and self.reuse(out)
        if (files or self.skip_top) and not self.overwrite and not reusable:
            if foreign:
                what = f"{len(foreign)} file(s) harmonize did not write ({_names(foreign)})"
            else:
                what = f"the outputs of an earlier run ({len(owned)} file(s))"
            raise OutputDirError(f"The output directory {out} is not empty: it holds {what}. Choose an empty or new "
                                 "--out, or pass --overwrite (which replaces only files harmonize wrote).")
        clashing = sorted(f for f in walked_foreign
                          if self.reserved is None or PurePosixPath(f).parts[0] in self.reserved)
        if clashing and (self.overwrite or reusable):
            raise OutputDirError(
                f"The output directory {out} holds {len(clashing)} file(s) that harmonize did not write, where this "
                f"run writes its outputs: {_names(clashing)}. --overwrite replaces only files harmonize wrote "
                f"(listed in {RECORD_FILENAME}); move these away, or choose another --out.")
        if foreign:
            logger.info("Keeping %d file(s) in %s that harmonize did not write: %s", len(foreign), out,
                        _names(foreign))
        self.kept = walked_foreign | self.skip_top
        if self.overwrite:
            removable = [f for f in owned if not self._holds_input(out / f)]
            _remove(out, removable)
            owned -= set(removable)
        self._write_record(owned, complete=False)

    def _write_record(self, owned: set[str], complete: bool) -> None:
        write_json_atomic(self.path / RECORD_FILENAME,
                          {"tool": "harmonize", "command": self.command, "complete": complete,
                           "files": sorted(owned), "kept": sorted(self.kept)}, indent=1)

    # -- release ----------------------------------------------------------------------------------------------
    def release(self, failed: bool = False) -> None:
        """Record what the run wrote and unlock the folder (after a failure, discard it when asked)."""
        if self.nested or self._lock is None:
            return
        out = self.path
        _HELD.pop(out.resolve(), None)
        if not out.is_dir():  # removed meanwhile (e.g. a temporary folder): nothing to record, nothing to unlock
            self._lock = None
            return
        try:
            files, _ = _walk(out, self.skip_top)
            written = files - self.kept
            if failed and self.discard_on_error:
                _remove(out, written)
                written = set()
                if self.created and not self.kept:
                    (out / RECORD_FILENAME).unlink(missing_ok=True)
                    self._lock.release()
                    self._lock = None
                    _rmdir_quietly(out)
                    return
            if written:
                self._write_record(written, complete=True)
            else:  # nothing of harmonize's is left here: no record either
                (out / RECORD_FILENAME).unlink(missing_ok=True)
                if failed and self.created and not self.kept:  # a run that failed before writing: no empty folder
                    self._lock.release()
                    self._lock = None
                    _rmdir_quietly(out)
                    return
        except OSError as err:
            logger.warning("Could not update the record of outputs %s: %s", out / RECORD_FILENAME, err)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Path:
        return self.claim()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release(failed=exc_type is not None)


def output_file(path: str | os.PathLike[str], command: str, overwrite: bool = False,
                known: Callable[[Path], bool] | None = None) -> OutputDir:
    """Claim the folder of one output file (a manifest, a report) for a run; use the result as a context manager.

    The folder may hold anything else of the user's: it is kept, and not walked. The file itself:

    - absent: written; the folder's record then lists it;
    - present, without ``overwrite``: refused;
    - present, with ``overwrite``: replaced only when harmonize wrote it (the folder's record lists it, or
      ``known(path)`` recognises an output written before records existed); a file of the user's is refused by
      name and kept. Other files harmonize wrote in that folder are not removed.

    Args:
        path: the file the run writes.
        command: what writes it (named in the lock).
        overwrite: allow replacing a file harmonize wrote at ``path``.
        known: recognises a file harmonize wrote before it kept a record (e.g. by its first line).

    Returns:
        The (unclaimed) :class:`OutputDir` of the file's folder: ``with output_file(...):`` locks it for the run.

    Raises:
        OutputDirError: ``path`` is a folder, or exists without ``overwrite``.
    """
    target = Path(path).expanduser().absolute()
    _check_nul(target)
    if target.is_dir():
        raise OutputDirError(f"The output {target} is a folder; give the path of a file (e.g. {target / 'out.csv'}).")
    if target.exists() and not overwrite:
        raise OutputDirError(f"{target} already exists; choose another output path or pass --overwrite (which "
                             "replaces it only if harmonize wrote it).")

    def recognised(folder: Path) -> list[Path]:
        return [target] if known is not None and target.is_file() and known(target) else []

    return OutputDir(target.parent, command, reserved=(target.name,), reuse=lambda folder: True,
                     known_outputs=recognised)


def _recorded(path: Path) -> bool:
    """Whether the record of ``path``'s folder, or of a folder above it, lists ``path`` (or it is a temporary)."""
    if fnmatch(path.name, TMP_GLOB):
        return True
    for folder in path.parents:
        record = _read_record(folder)
        if record is not None and path.relative_to(folder).as_posix() in {str(f) for f in record["files"]}:
            return True
    return False


def check_replaceable(paths: Iterable[str | os.PathLike[str]], what: str) -> None:
    """Refuse to replace existing files that harmonize did not write (no record of their folder lists them).

    Args:
        paths: the files a run is about to write.
        what: the run, for the message (e.g. ``"Bundle inference"``).

    Raises:
        OutputDirError: naming every such file, and how to keep it.
    """
    foreign = sorted({str(p) for p in (Path(q).expanduser().absolute() for q in paths)
                      if p.is_file() and not _recorded(p)})
    if foreign:
        raise OutputDirError(
            f"{what} would replace {len(foreign)} file(s) that harmonize did not write: {_names(foreign)}. "
            f"harmonize replaces only files it wrote (listed in the folder's {RECORD_FILENAME}): move these away, "
            "or choose another output folder.")


def record_written(paths: Iterable[str | os.PathLike[str]], command: str) -> None:
    """Add files just written to the record of their folder (created if needed), so a later run may replace them.

    A folder claimed by an :class:`OutputDir` of this process is left to that claim, which records at its end.
    """
    by_folder: dict[Path, set[str]] = {}
    for given in paths:
        path = Path(given).expanduser().absolute()
        by_folder.setdefault(path.parent, set()).add(path.name)
    for folder, names in by_folder.items():
        if folder.resolve() in _HELD:
            continue
        record = _read_record(folder) or {"tool": "harmonize", "command": command, "complete": True, "files": [],
                                          "kept": []}
        record["files"] = sorted({str(f) for f in record["files"]} | names)
        try:
            write_json_atomic(folder / RECORD_FILENAME, record, indent=1)
        except OSError as err:
            logger.warning("Could not update the record of outputs %s: %s", folder / RECORD_FILENAME, err)


def hold_output_dir(path: str | os.PathLike[str], command: str, **kwargs: Any) -> Path:
    """Claim an output folder until the enclosing :func:`releases_output_dirs` call returns.

    For functions that claim their folder part-way through; outside such a call the folder is released when
    the process exits.

    Args:
        path: the output folder.
        command: what writes it.
        **kwargs: the other arguments of :class:`OutputDir`.

    Returns:
        The folder's path.
    """
    claim = OutputDir(path, command, **kwargs)
    out = claim.claim()
    if _RUNS:
        _RUNS[-1].append(claim)
    else:
        import atexit

        atexit.register(claim.release)
    return out


def releases_output_dirs(function: F) -> F:
    """Decorator: release (record and unlock) every folder :func:`hold_output_dir` claimed during the call."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _RUNS.append([])
        failed = True
        try:
            result = function(*args, **kwargs)
            failed = False
            return result
        finally:
            for claim in reversed(_RUNS.pop()):
                claim.release(failed=failed)

    return wrapper  # type: ignore[return-value]
