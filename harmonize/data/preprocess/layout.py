"""The output folder of preprocessing: its layout, the scans on their way through it, and the checks of the folder.

Output folder (``out_dir``)::

    manifest.csv        the input manifest, same rows and columns, image/label pointing at the outputs
    images/<id>.nii.gz  the preprocessed image (float32)
    labels/<id>.nii.gz  the label, on the same grid (integer)
    masks/<id>.nii.gz   the foreground mask (uint8)
    spatial/<id>.nii.gz the image after the spatial steps (landmarks are trained on these)
    landmarks/          one ``.npy`` of landmarks per site, ``pooled.npy``, ``landmarks.json`` and ``fit.json``
    cache/<id>.json     what each output was made from
    shards/K-of-N/      a shard's part of the manifest and its record (sharded runs only)
    preprocess.json     marks the folder as a preprocessing output and records the settings
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from harmonize.errors import HarmonizeError, ManifestError
from harmonize.io import TMP_GLOB, read_json_object
from harmonize.keys import Keys

__all__ = [
    "CACHE_DIR", "FIT_FILENAME", "IMAGES_DIR", "JSON_FORMAT", "LABELS_DIR", "LANDMARKS_DIR", "LANDMARKS_INDEX_FILENAME",
    "MANIFEST_FILENAME", "MARKER_FILENAME", "MARKER_TOOL", "MASKS_DIR", "NIFTI_SUFFIX", "PIPELINE_VERSION",
    "POOLED_LANDMARKS_FILENAME", "RESERVED_NAMES", "SHARDS_DIR", "SPATIAL_DIR", "Scan", "check_out_dir",
    "check_scans_listed_once", "content_key", "earlier_outputs", "file_hash", "files_ok", "is_earlier_output",
    "outputs", "remove_leftover_temporaries", "safe_name", "scans_of",
]

#: Name of the manifest written into the output folder.
MANIFEST_FILENAME = "manifest.csv"
#: File that marks a folder as the output of :func:`preprocess_manifest` (and records its settings).
MARKER_FILENAME = "preprocess.json"
#: Index of the trained landmarks, inside :data:`LANDMARKS_DIR`.
LANDMARKS_INDEX_FILENAME = "landmarks.json"
#: Record of the fit step (manifest, settings, landmarks) that the shards check, inside :data:`LANDMARKS_DIR`.
FIT_FILENAME = "fit.json"
#: Sub-folders of the output folder.
IMAGES_DIR, LABELS_DIR, MASKS_DIR, SPATIAL_DIR = "images", "labels", "masks", "spatial"
LANDMARKS_DIR, CACHE_DIR, SHARDS_DIR = "landmarks", "cache", "shards"
#: Top-level names written into the output folder: a file harmonize did not write there is refused by name.
RESERVED_NAMES = (MANIFEST_FILENAME, MARKER_FILENAME, IMAGES_DIR, LABELS_DIR, MASKS_DIR, SPATIAL_DIR, LANDMARKS_DIR,
                  CACHE_DIR, SHARDS_DIR)
#: Landmarks file of the sites without training scans.
POOLED_LANDMARKS_FILENAME = "pooled.npy"
#: Bumped whenever the pipeline's code changes what it writes, so that old caches are not trusted.
PIPELINE_VERSION = 4
#: Tag written into the marker file.
MARKER_TOOL = "harmonize preprocess"
#: Suffix of the written NIfTI files.
NIFTI_SUFFIX = ".nii.gz"
#: Bytes read at a time when hashing a file.
HASH_CHUNK = 1 << 20
#: Characters kept as they are in an output file name; others become "_" (and a hash of the id is added).
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
#: How the JSON files (records, marker, landmarks index) are formatted.
JSON_FORMAT: Mapping[str, Any] = MappingProxyType({"indent": 1, "sort_keys": True})


def file_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a JSON-able mapping: the cache key of whatever it describes."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def safe_name(subject_id: str) -> str:
    """A file-name stem for a subject id (ids with other characters get a hash so they stay unique)."""
    safe = _SAFE_NAME.sub("_", subject_id)
    if safe != subject_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha1(subject_id.encode()).hexdigest()[:8]}"
    return safe


@dataclass
class Scan:
    """One manifest row on its way through the pipeline."""

    row: int
    subject_id: str
    site: str
    split: str
    image: str
    label: str | None
    name: str
    spatial_key: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return f"row {self.row} (subject {self.subject_id!r})"


def scans_of(frame: pd.DataFrame) -> list[Scan]:
    """One :class:`Scan` per manifest row, in the manifest's order."""
    labels = frame[Keys.LABEL] if Keys.LABEL in frame else pd.Series(None, index=frame.index, dtype=object)
    scans = []
    for row, sid, site, split, image, label in zip(frame.index, frame[Keys.SUBJECT_ID], frame[Keys.SITE],
                                                   frame[Keys.SPLIT], frame[Keys.IMAGE], labels):
        label = None if label is None or pd.isna(label) else str(label)
        scans.append(Scan(int(row), str(sid), str(site), str(split), str(image), label, safe_name(str(sid))))
    return scans


def files_ok(out_dir: Path, files: Mapping[str, Any] | None) -> bool:
    """True when every recorded output exists with the recorded hash."""
    if not files:
        return False
    for entry in files.values():
        path = out_dir / entry["path"]
        if not path.is_file() or file_hash(path) != entry["sha256"]:
            return False
    return True


def outputs(out_dir: Path, scan: Scan) -> dict[str, Path]:
    """Where a scan's outputs go: ``spatial``, ``mask``, ``image`` and (with a label) ``label``."""
    file = scan.name + NIFTI_SUFFIX
    paths = {"spatial": out_dir / SPATIAL_DIR / file, "mask": out_dir / MASKS_DIR / file,
             "image": out_dir / IMAGES_DIR / file}
    if scan.label is not None:
        paths["label"] = out_dir / LABELS_DIR / file
    return paths


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(out_dir: Path, manifest: Path, frame: pd.DataFrame) -> None:
    """Refuse an output folder that would mix with the inputs (the rest is :class:`OutputDir`'s work)."""
    source = manifest.parent.resolve()
    if out_dir == source:
        raise HarmonizeError(
            f"The output folder {out_dir} is the folder of the input manifest {manifest}. Preprocessing never "
            "writes beside its inputs: choose another folder, e.g. --out "
            f"{source.parent / (source.name + '_preprocessed')}."
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise HarmonizeError(f"The output path {out_dir} exists and is not a folder; choose a folder.")
    inputs = [manifest.resolve()] + [
        Path(p).resolve() for column in (Keys.IMAGE, Keys.LABEL) if column in frame for p in frame[column].dropna()
    ]
    clashes = [p for p in inputs if _is_within(p, out_dir)]
    if clashes:
        examples = ", ".join(str(p) for p in clashes[:3])
        raise HarmonizeError(
            f"The output folder {out_dir} holds {len(clashes)} of the input files (e.g. {examples}); outputs "
            "written there could replace inputs. Choose a folder outside the input data."
        )


def check_scans_listed_once(manifest: Path, frame: pd.DataFrame) -> None:
    """Refuse a manifest that lists one image file in two rows (a train/test leak the outputs would hide)."""
    problems = []
    first: dict[str, tuple[int, str]] = {}
    for row, image, split in zip(frame.index, frame[Keys.IMAGE], frame[Keys.SPLIT]):
        key = os.path.realpath(str(image))
        if key in first:
            other, other_split = first[key]
            problems.append(f"row {int(row)} (split '{split}'): the same image as row {other} "
                            f"(split '{other_split}'), {image}")
        else:
            first[key] = (int(row), str(split))
    if problems:
        raise ManifestError(
            f"{manifest} lists {len(problems)} image(s) twice. Each row must be its own scan: a scan in both a "
            "training and a test row leaks the test set into training, and the preprocessed copies would hide "
            "it. Remove the repeated rows (harmonize validate lists them too).", problems=problems)


def remove_leftover_temporaries(out_dir: Path) -> None:
    """Delete temporary files left by a run that was killed (they are never trusted, only clutter)."""
    folders = [out_dir / sub for sub in (IMAGES_DIR, LABELS_DIR, MASKS_DIR, SPATIAL_DIR, LANDMARKS_DIR, CACHE_DIR)]
    folders += sorted((out_dir / SHARDS_DIR).glob("*"))
    for folder in folders:
        if folder.is_dir():
            for path in folder.glob(TMP_GLOB):
                path.unlink(missing_ok=True)


def is_earlier_output(out_dir: Path) -> bool:
    """True when ``out_dir`` holds an earlier run's outputs (its cache may be reused without ``overwrite``)."""
    marker = read_json_object(out_dir / MARKER_FILENAME)
    return marker is not None and marker.get("tool") == MARKER_TOOL


def earlier_outputs(out_dir: Path) -> list[Path]:
    """Files an earlier run wrote, known from its marker, cache records, landmarks index and shard folders.

    Shards write without the folder's record (:class:`~harmonize.output_dir.OutputDir` is claimed by one run at a
    time), so what they wrote is known from here.
    """
    if not is_earlier_output(out_dir):
        return []
    found = [out_dir / MARKER_FILENAME, out_dir / MANIFEST_FILENAME,
             out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME, out_dir / LANDMARKS_DIR / FIT_FILENAME]
    found += [path for path in (out_dir / SHARDS_DIR).glob("*/*") if path.is_file()]  # shards write no record
    for record_path in (out_dir / CACHE_DIR).glob("*.json"):
        record = read_json_object(record_path) or {}
        found.append(record_path)
        for stage in ("spatial_files", "final_files"):
            entries = record.get(stage)
            if isinstance(entries, dict):
                found.extend(out_dir / str(e.get("path")) for e in entries.values() if isinstance(e, dict))
    index = read_json_object(out_dir / LANDMARKS_DIR / LANDMARKS_INDEX_FILENAME) or {}
    entries = [*(index.get("sites") or {}).values(), index.get("pooled")]
    found.extend(out_dir / LANDMARKS_DIR / str(e["file"]) for e in entries if isinstance(e, dict) and "file" in e)
    return found
