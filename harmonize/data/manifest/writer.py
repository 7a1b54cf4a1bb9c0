"""Writing a manifest CSV atomically, with image and label paths relative to its folder."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from harmonize.errors import ManifestError
from harmonize.io import write_text_atomic
from harmonize.keys import Keys

__all__ = ["write_manifest"]


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False,
                   relative_paths: bool = True) -> Path:
    """Write a manifest CSV atomically (temporary file in the same folder, then rename).

    Args:
        frame: one row per scan with the manifest columns (extra columns are written too; the index is not).
        path: the CSV to write.
        overwrite: replace an existing file; without it an existing file is an error.
        relative_paths: write ``image``/``label`` relative to the CSV's folder, so the cohort can move.

    Returns:
        The path written.

    Raises:
        ManifestError: the file exists and ``overwrite`` is false, or its folder does not exist.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() and not overwrite:
        raise ManifestError(f"{path} already exists; choose another output path or pass overwrite "
                            "(--overwrite on the command line)")
    if not path.parent.is_dir():
        raise ManifestError(f"the folder of the output {path} does not exist; create it first")
    out = frame.copy()
    if relative_paths:
        for column in (Keys.IMAGE, Keys.LABEL):
            if column in out:
                out[column] = [None if pd.isna(p) else os.path.relpath(p, path.parent) for p in out[column]]
    if Keys.FORGET in out:
        out[Keys.FORGET] = out[Keys.FORGET].map(lambda v: "true" if bool(v) else "false")
    # Plain UTF-8 text whatever the name (read_manifest reads text), so pandas never infers a compression.
    return write_text_atomic(path, out.to_csv(index=False, lineterminator="\n"))
