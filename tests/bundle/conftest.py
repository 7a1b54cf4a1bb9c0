"""Fixtures of the bundle tests: the tiny cohort preprocessed the way the bundles' training expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest

#: The tiny cohort (24^3 at 8.3 mm) is preprocessed to 16^3 at 10 mm: another spacing and shape than the raw scans.
TINY_PREPROCESS = PreprocessConfig(target_spacing=10.0, target_shape=(16, 16, 16))


@pytest.fixture(scope="session")
def tiny_preprocessed(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest of the tiny cohort after ``harmonize preprocess`` (per-site landmarks, 16^3 at 10 mm); read-only."""
    out = tmp_path_factory.mktemp("tiny_preprocessed") / "pre"
    return preprocess_manifest(tiny_cohort, out, TINY_PREPROCESS, progress=False).manifest
