"""Fixtures of the transform tests: a subject holding the MNI tissue maps at 24^3 (8.33 mm voxels)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torchio as tio

from harmonize.data.templates import load_templates
from harmonize.keys import Keys

SHAPE = 24


def _jacobian_determinant(coords: np.ndarray) -> np.ndarray:
    grads = np.stack([np.stack(np.gradient(coords[i])) for i in range(3)])  # (3, 3, X, Y, Z)
    return np.linalg.det(np.moveaxis(grads, (0, 1), (-2, -1)))


@pytest.fixture
def jacobian_determinant() -> Callable[[np.ndarray], np.ndarray]:
    """Determinant of the Jacobian of a sampling map ``(3, X, Y, Z)`` (voxel units), by central differences."""
    return _jacobian_determinant


@pytest.fixture
def make_subject() -> Callable[[], tio.Subject]:
    """Factory of fresh subjects whose ``tissues`` are the MNI CSF, GM and WM maps at 24^3."""
    templates = load_templates(SHAPE)

    def make() -> tio.Subject:
        tissues = tio.LabelMap(tensor=torch.from_numpy(templates.tissues()), affine=templates.affine)
        return tio.Subject({Keys.TISSUES: tissues})

    return make
