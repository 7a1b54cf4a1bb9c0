"""ensure_embedded_cohort: generated and preprocessed once per settings, atomically, then reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from harmonize.bundle import default_cache_dir, ensure_embedded_cohort, resolve_manifest
from harmonize.bundle.embedded_cohort import (
    CACHE_ENV,
    SETTINGS_FILENAME,
    _move_into_place,
)
from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.io import TMP_TAG

#: The smallest cohort: 2 sites x 3 subjects at 16^3, preprocessed to 16^3 at 12.5 mm.
TINY = {"sites": 2, "subjects_per_site": 3, "shape": 16, "preprocess_shape": (16, 16, 16), "preprocess_spacing": 12.5}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cache")
    return folder, ensure_embedded_cohort(folder, **TINY)


def test_first_call_generates_and_preprocesses(cache):
    folder, manifest = cache
    frame = read_manifest(manifest)
    assert len(frame) == 6 and sorted(frame["site"].unique()) == ["site0", "site1"]
    assert manifest.parent.name == "preprocessed" and manifest.parents[1].parent == folder
    assert (manifest.parents[1] / SETTINGS_FILENAME).is_file()
    assert all(Path(p).is_relative_to(manifest.parent) for p in frame["image"])  # the preprocessed scans
    assert not [p for p in folder.iterdir() if TMP_TAG in p.name]  # no temporary folder left behind


def test_second_call_reuses_the_folder(cache):
    folder, manifest = cache
    stamp = manifest.stat().st_mtime_ns
    assert ensure_embedded_cohort(folder, **TINY) == manifest
    assert manifest.stat().st_mtime_ns == stamp
    assert len(list(folder.iterdir())) == 1


def test_other_settings_get_another_folder(cache):
    folder, manifest = cache
    other = ensure_embedded_cohort(folder, **{**TINY, "seed": 1})
    assert other != manifest and other.parents[1].parent == folder
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 2


def test_invalid_settings_leave_nothing(tmp_path):
    with pytest.raises(ConfigError, match="subjects_per_site"):
        ensure_embedded_cohort(tmp_path, **{**TINY, "subjects_per_site": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_racing_process_keeps_the_first_copy(cache, tmp_path):
    _, manifest = cache
    late = tmp_path / "late"
    late.mkdir()
    _move_into_place(late, manifest.parents[1])  # the target is complete: no error, the first copy stays
    assert late.is_dir() and manifest.is_file()
    incomplete = tmp_path / "incomplete-target"
    (incomplete / "x").mkdir(parents=True)
    with pytest.raises(HarmonizeError, match="Cannot move the embedded cohort"):
        _move_into_place(late, incomplete)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "harmonize"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "harmonize"


def test_resolve_manifest(cache, tiny_cohort, tmp_path):
    folder, manifest = cache
    assert resolve_manifest(str(tiny_cohort)) == tiny_cohort.absolute()
    assert resolve_manifest(None, folder, TINY) == manifest
    raw = resolve_manifest(None, folder, TINY, raw=True)  # the generated scans, before preprocessing
    assert raw == manifest.parent.parent / "cohort" / "manifest.csv" and raw.is_file()
    assert resolve_manifest(str(tiny_cohort), raw=True) == tiny_cohort.absolute()
    with pytest.raises(HarmonizeError, match=r"missing\.csv does not exist.*leave it null"):
        resolve_manifest(tmp_path / "missing.csv")
