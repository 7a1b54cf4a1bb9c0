"""Age-related brain atrophy of partial-volume tissue maps: cortical thinning and ventricular enlargement."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from torchio.transforms.transform import Transform

from harmonize.errors import integers_problem, number_problem, raise_problems
from harmonize.keys import Keys

from ._resample import sample_at
from .deformation import resample_image

__all__ = ["Atrophy"]

#: Scale (mm) over which a grey-matter voxel is judged nearer the CSF (pial) or the white-matter side.
PIAL_SCALE_MM = 3.0
#: CSF deeper than this below the brain's outer surface (mm) counts as ventricular (interior).
VENTRICLE_DEPTH_MM = 15.0
#: Depth (mm) over which CSF goes from not ventricular to fully ventricular.
VENTRICLE_RAMP_MM = 10.0
#: Smoothing (mm) of the ventricle map whose gradient drives the dilation; also the largest dilation allowed
#: (a displacement below about 1.6 smoothing widths keeps the warp invertible).
VENTRICLE_SMOOTHING_MM = 6.0
#: The depth below the surface is computed on a grid of about this spacing (mm), then interpolated: it only
#: needs to be accurate to a fraction of VENTRICLE_RAMP_MM, and the distance transform is the costly step.
DEPTH_GRID_MM = 6.0
#: Probability sum above which a voxel is inside the head.
INSIDE_THRESHOLD = 0.5
_EPS = 1e-6


class Atrophy(Transform):
    """Thin the cortex and enlarge the ventricles of partial-volume tissue maps, as ageing brains do.

    - **Cortical thinning**: a fraction ``gm_thinning`` of the grey matter turns into CSF, weighted by how near
      each voxel lies to the pial (CSF) side rather than the white-matter side, so the cortex thins from the
      outside and the sulci widen; deep grey matter surrounded by white matter is spared.
    - **Ventricular enlargement**: a smooth warp pushes the tissue around the interior (ventricular) CSF
      outward by up to ``ventricle_dilation_mm``; the interior CSF is the CSF deeper than 15 mm below the
      brain's surface.

    Both effects are what brain-age models read (Cole & Franke 2017, "Predicting age using neuroimaging",
    Trends Neurosci. 40). The transform changes only the tissue maps; render the image after it.

    Args:
        gm_thinning: fraction in [0, 1) of pial-side grey matter that becomes CSF.
        ventricle_dilation_mm: largest outward move of the ventricle walls, in [0, 6] mm.
        tissues_key: name of the partial-volume tissue maps in the subject.
        channels: indices of the CSF, GM and WM channels in those maps.
        **kwargs: see :class:`torchio.transforms.Transform`.

    Example:
        >>> import torch, torchio as tio
        >>> tissues = tio.LabelMap(tensor=torch.rand(3, 16, 16, 16) / 3)
        >>> Atrophy(gm_thinning=0.2)(tio.Subject(tissues=tissues))["tissues"].shape
        (3, 16, 16, 16)
    """

    def __init__(
        self,
        gm_thinning: float = 0.0,
        ventricle_dilation_mm: float = 0.0,
        tissues_key: str = Keys.TISSUES,
        channels: Sequence[int] = (0, 1, 2),
        **kwargs,
    ) -> None:
        problems = [number_problem("gm_thinning", gm_thinning, strict=False, maximum=1, strict_maximum=True),
                    number_problem("ventricle_dilation_mm", ventricle_dilation_mm, strict=False,
                                   maximum=VENTRICLE_SMOOTHING_MM),
                    integers_problem("channels", channels, length=3, distinct=True)]
        if problems[1]:
            problems[1] += " (larger warps may fold)"
        raise_problems(type(self).__name__, problems)
        super().__init__(**kwargs)
        self.gm_thinning = float(gm_thinning)
        self.ventricle_dilation_mm = float(ventricle_dilation_mm)
        self.channels = [int(c) for c in channels]
        self.tissues_key = str(tissues_key)
        self.args_names = ["gm_thinning", "ventricle_dilation_mm", "tissues_key", "channels"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if self.tissues_key not in subject:
            raise KeyError(f"Atrophy needs tissue maps under '{self.tissues_key}'; the subject has {sorted(subject)}")
        image = subject[self.tissues_key]
        if image.num_channels <= max(self.channels):
            raise ValueError(
                f"'{self.tissues_key}' has {image.num_channels} channels; channels={self.channels} needs more"
            )
        spacing = np.asarray(image.spacing, dtype=np.float64)
        data = image.data.numpy().astype(np.float32, copy=True)
        if self.gm_thinning > 0:
            self._thin_cortex(data, spacing)
        image.set_data(torch.from_numpy(data))
        if self.ventricle_dilation_mm > 0:
            resample_image(image, self.ventricle_sampling_coordinates(data, spacing))
        return subject

    def _thin_cortex(self, data: np.ndarray, spacing: np.ndarray) -> None:
        csf_c, gm_c, wm_c = self.channels
        sigma = np.maximum(PIAL_SCALE_MM / spacing, 1.0)
        csf_near = ndimage.gaussian_filter(data[csf_c], sigma)
        wm_near = ndimage.gaussian_filter(data[wm_c], sigma)
        pial = csf_near / (csf_near + wm_near + _EPS)
        moved = np.float32(self.gm_thinning) * data[gm_c] * pial
        data[gm_c] -= moved
        data[csf_c] += moved

    def ventricle_sampling_coordinates(self, data: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Voxel coordinates ``(3, X, Y, Z)`` sampled by the ventricle-dilation warp.

        Args:
            data: tissue maps ``(C, X, Y, Z)``.
            spacing: voxel size (mm) per axis.

        Returns:
            float32 coordinates; the identity grid where there is no interior CSF.
        """
        spacing = np.asarray(spacing, dtype=np.float64)
        coords = np.indices(data.shape[1:], dtype=np.float32)
        inside = data[self.channels].sum(axis=0) > INSIDE_THRESHOLD
        depth = _depth_mm(inside, spacing)
        interior = np.clip((depth - VENTRICLE_DEPTH_MM) / VENTRICLE_RAMP_MM, 0.0, 1.0)
        ventricles = data[self.channels[0]] * interior.astype(np.float32)
        potential = ndimage.gaussian_filter(ventricles, np.maximum(VENTRICLE_SMOOTHING_MM / spacing, 1.0))
        gradient_mm = np.stack(np.gradient(potential)) / spacing.astype(np.float32)[:, None, None, None]
        largest = float(np.sqrt((gradient_mm**2).sum(axis=0)).max())
        if largest <= _EPS:
            return coords
        factor = (self.ventricle_dilation_mm / largest) / spacing
        coords += gradient_mm * factor.astype(np.float32)[:, None, None, None]
        return coords


def _depth_mm(inside: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) of each inside voxel to the nearest outside voxel, on a grid of about DEPTH_GRID_MM."""
    step = np.maximum(np.round(DEPTH_GRID_MM / spacing), 1).astype(int)
    if (step == 1).all():
        return ndimage.distance_transform_edt(inside, sampling=spacing).astype(np.float32)
    coarse = inside[:: step[0], :: step[1], :: step[2]]
    depth = ndimage.distance_transform_edt(coarse, sampling=spacing * step).astype(np.float32)
    coords = np.indices(inside.shape, dtype=np.float32) / step.astype(np.float32)[:, None, None, None]
    return sample_at(depth[None], coords)[0]
