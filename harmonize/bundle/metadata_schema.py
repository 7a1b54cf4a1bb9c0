"""MONAI's published schema of a bundle's ``metadata.json``, shipped with the package so nothing downloads.

The file ``meta_schema_20240725.json`` beside this module is MONAI's metadata schema of 25 July 2024, the one
published as :data:`METADATA_SCHEMA_URL` and named by every harmonize bundle's ``metadata.json`` (``schema``). It
was added to MONAI's code base as ``monai/bundle/meta_schema.json`` by Project-MONAI/MONAI PR #7409 and removed from
the code base the same day (commit 7f0e05f) when it was published as that release asset; the copy here is the
file of the parent commit, unchanged (no network was available to fetch the asset itself).

MONAI's ``verify_metadata`` downloads the schema named in ``metadata.json`` unless a file already exists at the
``filepath`` it is given; :func:`verify_bundle_metadata` passes the shipped file, so nothing downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["METADATA_SCHEMA_FILENAME", "METADATA_SCHEMA_URL", "metadata_schema_path", "verify_bundle_metadata"]

#: Where MONAI publishes the schema (the ``schema`` of every harmonize bundle's metadata.json).
METADATA_SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
#: File name of the shipped copy, beside this module (the published file's name).
METADATA_SCHEMA_FILENAME = METADATA_SCHEMA_URL.rsplit("/", 1)[1]


def metadata_schema_path() -> Path:
    """Path of the shipped copy of MONAI's published metadata schema."""
    return Path(__file__).with_name(METADATA_SCHEMA_FILENAME)


def verify_bundle_metadata(bundle_dir: str | os.PathLike[str]) -> None:
    """Run MONAI's ``verify_metadata`` on ``<bundle_dir>/configs/metadata.json`` with the shipped schema (offline).

    Raises:
        FileNotFoundError: the bundle has no ``configs/metadata.json``.
        ValueError: the metadata does not follow the schema (MONAI's message names the failing field).
        ModuleNotFoundError: ``jsonschema`` is not installed (``pip install jsonschema``).
    """
    from monai.bundle import verify_metadata

    meta = Path(bundle_dir) / "configs" / "metadata.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} does not exist: {bundle_dir} is not a bundle folder.")
    verify_metadata(meta_file=str(meta), filepath=str(metadata_schema_path()), create_dir=False)
