"""Files of a synthetic cohort (private to :mod:`harmonize.data.synth`): their names, the NIfTI and text writers
(atomic, byte-reproducible), and how a folder is recognised as a cohort written here.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from harmonize.io import write_bytes_atomic
from harmonize.keys import Keys

__all__ = ["COHORT_NAME", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.csv"
COHORT_NAME = "cohort.json"
IMAGES_DIR = "images"
LABELS_DIR = "labels"
NIFTI_SUFFIX = ".nii.gz"
#: Written into cohort.json, so that a directory can be recognised as a cohort made here.
GENERATOR = "harmonize.data.synth"
#: Decimals kept for ages (the stored values are the values used).
AGE_DECIMALS = 2
MANIFEST_COLUMNS = (Keys.SUBJECT_ID, Keys.IMAGE, Keys.LABEL, Keys.SITE, Keys.AGE, Keys.SEX, Keys.SPLIT)

def _previous_cohort_files(out: Path) -> list[Path] | None:
    """Files written by a previous cohort in ``out``, or ``None`` if ``out`` holds no cohort."""
    cohort_path = out / COHORT_NAME
    try:
        cohort = json.loads(cohort_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cohort, dict) or cohort.get("generator") != GENERATOR:
        return None
    files = [cohort_path, out / MANIFEST_NAME]
    root = out.resolve()
    for subject in cohort.get("subjects", []):
        for key in (Keys.IMAGE, Keys.LABEL):
            relative = subject.get(key) if isinstance(subject, dict) else None
            if isinstance(relative, str):
                path = (out / relative).resolve()
                if path.is_relative_to(root):
                    files.append(path)
    return files


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    # gzip with mtime=0 and no file name, so the bytes depend on the content only.
    _write_bytes_atomic(path, gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` atomically; an OSError (full disk, no permission) is an ``OutputWriteError`` naming ``path``."""
    write_bytes_atomic(path, data)


def _manifest_text(subjects: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([str(column) for column in MANIFEST_COLUMNS])
    for subject in subjects:
        row = [subject[column] for column in MANIFEST_COLUMNS]
        row[MANIFEST_COLUMNS.index(Keys.AGE)] = f"{subject[Keys.AGE]:.{AGE_DECIMALS}f}"
        writer.writerow([str(value) for value in row])
    return buffer.getvalue()


def _cohort_json(cohort: dict[str, Any]) -> str:
    """JSON of the cohort: settings indented, then one compact line per site and per subject."""
    lines = json.dumps({k: v for k, v in cohort.items() if k not in ("sites", "subjects")}, indent=2)[:-2]
    for key in ("sites", "subjects"):
        items = ",\n".join("    " + json.dumps(item, separators=(",", ":")) for item in cohort[key])
        lines += f',\n  "{key}": [\n{items}\n  ]'
    return lines + "\n}\n"


def _jsonable(value: Any) -> Any:
    """Plain JSON types (str keys, lists, floats) from dataclass dicts, enums, tuples and numpy values."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)
    return value
