"""The JSON schema that the bundles' ``metadata.json`` is verified against, shipped with the package.

MONAI's ``verify_metadata`` downloads the schema named in ``metadata.json`` unless a file already exists at the
``filepath`` it is given; :func:`verify_bundle_metadata` passes the schema shipped here, so nothing downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["METADATA_SCHEMA_FILENAME", "metadata_schema_path", "verify_bundle_metadata"]

#: File name of the schema, beside this module.
METADATA_SCHEMA_FILENAME = "metadata_schema.json"


def metadata_schema_path() -> Path:
    """Path of the shipped schema of a bundle's ``metadata.json``."""
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
