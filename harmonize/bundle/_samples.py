"""Per-sample views of an engine's batch and output (private helper of the bundle writers)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monai.data import decollate_batch

__all__ = ["as_samples", "source_file"]


def as_samples(data: Any) -> list[Mapping[str, Any]]:
    """A batch or an engine output as a list of per-sample dicts (decollating a batched dict)."""
    if isinstance(data, Mapping):
        return list(decollate_batch(data, detach=True))
    if isinstance(data, Sequence) and not isinstance(data, str):
        return list(data)
    raise TypeError(f"Expected a dict batch or a list of per-sample dicts, got {type(data).__name__}.")


def source_file(image: Any) -> str:
    """The file an image was loaded from (its MetaTensor's ``filename_or_obj``), or ``""``."""
    meta = getattr(image, "meta", None) or {}
    return str(meta.get("filename_or_obj", ""))
