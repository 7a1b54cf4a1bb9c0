"""Tests of harmonize.io: atomic writes through a temporary file beside the target."""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import harmonize.io as hio
from harmonize.io import (
    TMP_GLOB,
    TMP_TAG,
    atomic_write,
    temporary_suffix,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


class WriterFailed(RuntimeError):
    """Raised by the failing writers of these tests."""


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that changes it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("sub-01.nii.gz", ".nii.gz"),
        ("sub-01.nii", ".nii"),
        ("manifest.csv.gz", ".csv.gz"),
        ("pooled.npy", ".npy"),
        ("combat.npz", ".npz"),
        ("sub-01.v2.json", ".json"),
        ("archive.gz", ".gz"),
        ("README", ""),
    ],
)
def test_temporary_suffix(name, suffix):
    assert temporary_suffix(Path("folder") / name) == suffix


@pytest.mark.parametrize("name", ["sub-01.nii.gz", "landmarks.npy", "report.html", "README"])
def test_temporary_file_is_beside_path_hidden_tagged_and_keeps_the_suffix(tmp_path, name):
    path = tmp_path / name
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.is_file() and tmp.stat().st_size == 0  # created empty before the writer runs
        assert list(tmp_path.glob(TMP_GLOB)) == [tmp]  # the pattern the preprocess clean-up uses finds it
        tmp.write_bytes(b"content")

    assert atomic_write(path, write) == path
    (tmp,) = seen
    assert tmp.parent == path.parent
    assert tmp.name.startswith(f".{name}{TMP_TAG}")
    assert tmp.name.endswith(temporary_suffix(path))
    assert len(tmp.name) > len(f".{name}{TMP_TAG}{temporary_suffix(path)}")  # a random part in between
    assert not tmp.exists()
    assert path.read_bytes() == b"content"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_format_sniffing_writers_write_the_target_format(tmp_path):
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nifti = tmp_path / "scan.nii.gz"
    atomic_write(nifti, lambda tmp: nib.save(nib.Nifti1Image(array, np.eye(4)), tmp))
    assert nifti.read_bytes()[:2] == b"\x1f\x8b"  # gzip, chosen by nibabel from the ".nii.gz" suffix
    np.testing.assert_array_equal(np.asarray(nib.load(nifti).dataobj), array)

    npy = tmp_path / "landmarks.npy"
    atomic_write(npy, lambda tmp: np.save(tmp, array))  # np.save would append ".npy" to a name without it
    np.testing.assert_array_equal(np.load(npy), array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["landmarks.npy", "scan.nii.gz"]


def test_parent_folders_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    assert write_text_atomic(path, "hello\n") == path
    assert path.read_text() == "hello\n"


@pytest.mark.parametrize("error", [WriterFailed("disk full"), KeyboardInterrupt()])
def test_failing_writer_leaves_existing_path_untouched_and_no_temporary(tmp_path, error):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"old content")
    before = path.stat()

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half of the new")
        raise error

    with pytest.raises(type(error)) as caught:
        atomic_write(path, write)
    assert caught.value is error  # re-raised unchanged
    assert path.read_bytes() == b"old content"
    assert path.stat().st_ino == before.st_ino and path.stat().st_mtime_ns == before.st_mtime_ns
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nii.gz"]


def test_failing_writer_creates_no_file(tmp_path):
    path = tmp_path / "out" / "report.json"

    def write(tmp: Path) -> None:
        raise WriterFailed("cannot render")

    with pytest.raises(WriterFailed, match="cannot render"):
        atomic_write(path, write)
    assert not path.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_unencodable_json_leaves_no_file(tmp_path):
    path = tmp_path / "settings.json"
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic(path, {"when": object()})
    assert list(tmp_path.iterdir()) == []


def test_cleanup_failure_is_logged_and_the_writer_error_kept(tmp_path, caplog):
    path = tmp_path / "out.txt"
    seen: list[Path] = []

    def write(tmp: Path) -> None:  # leaves something at the temporary path that unlink cannot remove
        seen.append(tmp)
        tmp.unlink()
        tmp.mkdir()
        raise WriterFailed("render failed")

    with caplog.at_level(logging.WARNING, logger="harmonize.io"), pytest.raises(WriterFailed, match="render failed"):
        atomic_write(path, write)
    (tmp,) = seen
    assert not path.exists()
    assert f"Could not remove the temporary file {tmp}" in caplog.text
    tmp.rmdir()


def test_existing_file_is_replaced_whole_not_modified_in_place(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("old,header\n" + "x,y\n" * 1000)
    link = tmp_path / "hard_link_to_old.csv"
    os.link(path, link)

    write_text_atomic(path, "new\n")

    assert path.read_text() == "new\n"  # no tail of the longer old content
    assert link.read_text().startswith("old,header\n")  # the old file itself was never written to
    assert path.stat().st_ino != link.stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard_link_to_old.csv", "manifest.csv"]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o027, 0o640)])
@pytest.mark.usefixtures("umask")
def test_permissions_follow_the_umask(tmp_path, mask, mode):
    os.umask(mask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = write_bytes_atomic(tmp_path / "atomic.bin", b"x")
    assert path.stat().st_mode & 0o777 == mode
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # as a plain open() would


@pytest.mark.usefixtures("umask")
def test_replacing_a_file_gives_new_file_permissions(tmp_path):
    os.umask(0o022)
    path = tmp_path / "out.txt"
    path.write_text("old")
    path.chmod(0o600)
    write_text_atomic(path, "new")
    assert path.stat().st_mode & 0o777 == 0o644  # a new file, like the tmp-then-rename copies it replaces


def test_json_round_trip(tmp_path):
    obj = {"site": "Prisma-3T", "ages": [23.5, 71.25], "nested": {"ok": True, "none": None}, "µ": "straße"}
    path = write_json_atomic(tmp_path / "index.json", obj, indent=2, sort_keys=True)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == obj
    assert text == json.dumps(obj, indent=2, sort_keys=True) + "\n"
    assert write_json_atomic(tmp_path / "small.json", {"b": 1, "a": [1, 2]}).read_text() == '{"b": 1, "a": [1, 2]}\n'


def test_text_is_written_exactly_and_bytes_round_trip(tmp_path):
    text_path = write_text_atomic(tmp_path / "lines.csv", "a,b\r\nc,d\n")
    assert text_path.read_bytes() == b"a,b\r\nc,d\n"  # no newline translation
    latin = write_text_atomic(tmp_path / "latin.txt", "café", encoding="latin-1")
    assert latin.read_bytes() == b"caf\xe9"
    data = gzip.compress(bytes(range(256)), mtime=0)
    assert write_bytes_atomic(str(tmp_path / "blob.gz"), data).read_bytes() == data


def test_taken_temporary_names_are_skipped(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    names = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(hio.secrets, "token_hex", lambda nbytes: next(names))
    taken = tmp_path / f".out.txt{TMP_TAG}aaaa.txt"
    taken.write_text("another writer's temporary file")
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("mine")

    atomic_write(path, write)
    assert seen == [tmp_path / f".out.txt{TMP_TAG}bbbb.txt"]
    assert taken.read_text() == "another writer's temporary file"
    assert path.read_text() == "mine"


def test_no_free_temporary_name_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(hio.secrets, "token_hex", lambda nbytes: "aaaa")
    monkeypatch.setattr(hio, "_MAX_ATTEMPTS", 3)
    (tmp_path / f".out.txt{TMP_TAG}aaaa.txt").write_text("taken")
    with pytest.raises(FileExistsError, match=r"No free temporary file name beside .*out\.txt after 3 attempts"):
        write_text_atomic(tmp_path / "out.txt", "x")
    assert not (tmp_path / "out.txt").exists()
