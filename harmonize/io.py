"""Atomic file writes: write to a temporary file beside the target, then ``os.replace`` it onto the target.

A reader (or a run that is killed half-way) never sees a half-written output: the target holds either its old
content or the new one. Every module of harmonize that writes an output goes through :func:`atomic_write` or one
of the helpers built on it, so temporary files are named, permissioned and cleaned up in one way:

- the temporary file lies in the target's folder (``os.replace`` is atomic only within one file system) and is
  named ``.<name>`` + :data:`TMP_TAG` + a random part + the target's suffix, e.g.
  ``.sub-01.nii.gz.tmp-3f9a0c1b2d4e.nii.gz``: hidden, recognisable by :data:`TMP_TAG` (code that removes the
  left-overs of a killed run globs for it), and with the same suffix as the target, because nibabel, numpy and
  pandas choose the file format from it (``.nii.gz`` counts as one suffix, see :func:`temporary_suffix`);
- the temporary file gets the permissions a plain ``open()`` would give the target (``0o666`` less the umask),
  not the ``0600`` of :func:`tempfile.mkstemp`: it is created with ``os.open(..., 0o666)`` so that the kernel
  applies the umask (and any default ACL of the folder) itself, without reading or changing the process umask;
- on any failure (including ``KeyboardInterrupt``) the temporary file is removed and ``path`` is left untouched;
  an ``OSError`` (a full disk, no permission, a name too long) becomes an :class:`OutputWriteError` that names
  ``path``: a :class:`~harmonize.errors.HarmonizeError` (the CLI prints it as one paragraph) that is still an
  ``OSError`` (with the original ``errno``).

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_json_atomic(Path(folder) / "sub" / "settings.json", {"seed": 0}, indent=1)
    ...     text, names = path.read_text(), sorted(p.name for p in path.parent.iterdir())
    >>> text, names
    ('{\\n "seed": 0\\n}\\n', ['settings.json'])
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harmonize.errors import HarmonizeError

__all__ = [
    "COMPRESSION_SUFFIXES",
    "NEW_FILE_MODE",
    "OutputWriteError",
    "TMP_GLOB",
    "TMP_TAG",
    "atomic_write",
    "read_json_object",
    "temporary_suffix",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

logger = logging.getLogger(__name__)

#: Part of the name of every temporary file, after ``.<name of the target>``.
TMP_TAG = ".tmp-"
#: Glob pattern matching the temporary files (e.g. left by a killed run) in a folder.
TMP_GLOB = f".*{TMP_TAG}*"
#: Suffixes of compressed files: a temporary file keeps the suffix before them too (``.nii.gz``, ``.csv.gz``).
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
#: Permissions requested for a new file; the kernel removes the umask's bits, as for a plain ``open()``.
NEW_FILE_MODE = 0o666
#: Random bytes in a temporary file's name (12 hex characters).
_RANDOM_BYTES = 6
#: Names tried before giving up when every random name is taken (as ``tempfile.TMP_MAX``).
_MAX_ATTEMPTS = 10000


class OutputWriteError(HarmonizeError, OSError):
    """An output file that cannot be written (full disk, no permission, ...), naming the file.

    Args:
        path: the file that was being written.
        error: the ``OSError`` raised; its ``errno`` is kept.
    """

    def __init__(self, path: str | os.PathLike[str], error: OSError) -> None:
        reason = error.strerror or str(error)
        hint = {errno.ENOSPC: "the disk is full: free space, or choose an --out on another disk",
                errno.EDQUOT: "the disk quota is exceeded: free space, or choose an --out on another disk",
                errno.EACCES: "no permission: choose an --out you can write to, or fix its permissions",
                errno.EPERM: "no permission: choose an --out you can write to, or fix its permissions",
                errno.EROFS: "the file system is read-only: choose another --out",
                errno.ENAMETOOLONG: "the name is too long: use shorter subject ids or a shorter --out"}.get(
                    error.errno or -1, "check the output folder")
        super().__init__(f"Cannot write {path}: {reason} ({hint}). Nothing half-written was left behind.")
        self.errno, self.strerror, self.filename = error.errno, error.strerror, str(path)

    def __str__(self) -> str:
        return HarmonizeError.__str__(self)


def temporary_suffix(path: str | os.PathLike[str]) -> str:
    """The suffix a temporary file for ``path`` keeps, so that format-sniffing writers write the same format.

    A compression suffix (:data:`COMPRESSION_SUFFIXES`) is kept together with the suffix before it.

    Args:
        path: the target file.

    Returns:
        ``".nii.gz"`` for ``scan.nii.gz``, ``".npy"`` for ``pooled.npy``, ``""`` for a name without suffix.

    Example:
        >>> temporary_suffix("images/sub-01.nii.gz"), temporary_suffix("a.npz"), temporary_suffix("README")
        ('.nii.gz', '.npz', '')
    """
    suffixes = Path(path).suffixes
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSION_SUFFIXES:
        return "".join(suffixes[-2:])
    return suffixes[-1] if suffixes else ""


def _create_temporary(path: Path) -> Path:
    """Create a new, empty temporary file beside ``path`` (exclusively, with :data:`NEW_FILE_MODE`)."""
    suffix = temporary_suffix(path)
    for _ in range(_MAX_ATTEMPTS):
        tmp = path.with_name(f".{path.name}{TMP_TAG}{secrets.token_hex(_RANDOM_BYTES)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"No free temporary file name beside {path} after {_MAX_ATTEMPTS} attempts")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write`` fills a temporary file beside it, which then replaces ``path``.

    The parent folder is created if needed. The temporary file exists (empty) when ``write`` is called, keeps
    the suffix of ``path`` (:func:`temporary_suffix`) and has the permissions a plain ``open()`` would give;
    ``write`` may truncate or overwrite it. An existing ``path`` is replaced whole, never modified in place.

    Args:
        path: the file to write.
        write: called with the temporary file's path; writes the whole content to it.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputWriteError: the folder cannot be created or written, or ``write`` raised an ``OSError``: naming
            ``path``. Whatever else ``write`` raises is re-raised unchanged; in every case the temporary file is
            removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temporary(path)
    except (OutputWriteError, FileExistsError):
        raise
    except OSError as err:
        raise OutputWriteError(path, err) from err
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as err:  # keep the original error; the left-over only clutters the folder
            logger.warning("Could not remove the temporary file %s: %s", tmp, err)
        if isinstance(error, OSError) and not isinstance(error, (OutputWriteError, FileExistsError)):
            raise OutputWriteError(path, error) from error
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, exactly as given (no newline translation).

    Args:
        path: the file to write.
        text: the whole content.
        encoding: text encoding.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding, newline=""))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: the file to write.
        data: the whole content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, **json_kwargs: Any) -> Path:
    """Write ``obj`` as JSON (UTF-8, ending with a newline) to ``path`` atomically.

    The object is serialised before any file is touched, so an object that JSON cannot encode leaves no file.

    Args:
        path: the file to write.
        obj: a JSON-serialisable object.
        **json_kwargs: passed to :func:`json.dumps` (e.g. ``indent=2, sort_keys=True``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError, ValueError: ``obj`` cannot be encoded as JSON (from :func:`json.dumps`).
    """
    return write_text_atomic(path, json.dumps(obj, **json_kwargs) + "\n")


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object (a cache miss)."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return content if isinstance(content, dict) else None
