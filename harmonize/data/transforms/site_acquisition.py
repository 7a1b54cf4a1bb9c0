"""Render an MR image from tissue maps as one scanner (site) would acquire it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from torchio.transforms.intensity_transform import IntensityTransform

from harmonize.errors import ConfigError, integer_problem, number_problem, numbers_problem, raise_problems
from harmonize.keys import Keys

from ._checks import as_floats

__all__ = ["BACKGROUND_THRESHOLD", "SiteAcquisition", "num_bias_coefficients", "polynomial_bias_field"]

#: Voxels whose tissue probabilities sum below this are background (zero after brain extraction).
BACKGROUND_THRESHOLD = 0.5
#: Full width at half maximum of a Gaussian, in standard deviations.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def num_bias_coefficients(order: int) -> int:
    """Number of coefficients of a 3D polynomial bias field of total degree ``order`` (20 for order 3)."""
    return (order + 1) * (order + 2) * (order + 3) // 6


def polynomial_bias_field(shape: Sequence[int], coefficients: Sequence[float], order: int) -> np.ndarray:
    """Multiplicative bias field ``exp(sum_k c_k x^i y^j z^l)`` over ``i + j + l <= order``.

    The coordinates run from -1 to 1 across the volume along each axis; the coefficients are ordered as in
    TorchIO's ``BiasField`` (``i`` outermost, ``l`` innermost), after Van Leemput et al. 1999, "Automated
    model-based bias field correction of MR images of the brain", IEEE TMI 18.

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        coefficients: ``num_bias_coefficients(order)`` numbers.
        order: total degree of the polynomial.

    Returns:
        The field, float32, of the given shape.
    """
    expected = num_bias_coefficients(order)
    if len(coefficients) != expected:
        raise ConfigError(
            f"A bias field of order {order} needs {expected} coefficients, got {len(coefficients)}."
        )
    # Coefficient tensor C[i, j, k] (zero above the total degree), contracted with the per-axis powers.
    tensor = np.zeros((order + 1,) * 3, dtype=np.float64)
    index = 0
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                tensor[i, j, k] = float(coefficients[index])
                index += 1
    powers = []
    for n in shape:
        axis = np.linspace(-1.0, 1.0, int(n)) if n > 1 else np.zeros(1)
        powers.append(np.stack([axis**p for p in range(order + 1)]))  # (order + 1, n)
    log_field = np.einsum("ijk,ix->xjk", tensor, powers[0])
    log_field = np.einsum("xjk,jy->xyk", log_field, powers[1])
    log_field = np.einsum("xyk,kz->xyz", log_field, powers[2])
    return np.exp(log_field).astype(np.float32)


class SiteAcquisition(IntensityTransform):
    r"""Render an image from partial-volume tissue maps with one site's acquisition.

    The image is built the way a scanner and sequence shape it, in this order:

    1. **contrast**: each tissue gets its own intensity (``tissue_intensities``, on a 0..1 scale, e.g. the
       grey/white contrast of a 1.5 T vs a 3 T T1 sequence), mixed by the partial-volume probabilities, then
       the contrast curve :math:`x \mapsto x^\gamma`;
    2. **resolution**: a Gaussian point-spread function of ``blur_fwhm_mm`` per axis (thick slices blur one axis);
    3. **bias field**: a smooth multiplicative polynomial field (receive-coil inhomogeneity);
    4. **noise**: Rician magnitude noise :math:`|x + n_1 + i n_2|`, :math:`n \sim N(0, \sigma^2)`
       (Gaussian if ``rician`` is false), drawn from ``noise_seed``;
    5. **scale**: the scanner's arbitrary intensity unit, then background (where the tissue probabilities sum
       below 0.5) set to 0 as after brain extraction.

    It follows TorchIO's ``LabelsToImage``: it reads the tissue maps (a ``LabelMap`` or ``ScalarImage`` whose
    channels are the tissues) and adds a new ``ScalarImage``. All parameters are explicit, so the transform is
    deterministic; :class:`~harmonize.data.transforms.RandomSiteAcquisition` draws them.

    Args:
        tissue_intensities: intensity of each tissue channel before the contrast curve (non-negative).
        gamma: exponent of the contrast curve (> 0).
        blur_fwhm_mm: FWHM (mm) of the point-spread function, one number or one per axis (0 = none).
        bias_coefficients: coefficients of :func:`polynomial_bias_field` (empty = no bias field).
        bias_order: degree of the bias polynomial.
        noise_std: noise standard deviation on the 0..1 intensity scale (before ``intensity_scale``).
        noise_seed: seed of the noise (a fixed seed makes the transform deterministic).
        intensity_scale: global intensity factor (> 0).
        rician: Rician (magnitude) noise if true, additive Gaussian noise if false.
        mask_background: set background voxels to 0.
        tissues_key: name of the tissue maps in the subject.
        image_key: name of the image to create (replaced if present).
        **kwargs: see :class:`torchio.transforms.Transform`.

    Example:
        >>> import torch, torchio as tio
        >>> tissues = tio.LabelMap(tensor=torch.rand(3, 8, 8, 8))
        >>> subject = SiteAcquisition([0.2, 0.6, 0.9], noise_std=0.02)(tio.Subject(tissues=tissues))
        >>> subject["image"].shape
        (1, 8, 8, 8)
    """

    def __init__(
        self,
        tissue_intensities: Sequence[float],
        gamma: float = 1.0,
        blur_fwhm_mm: float | Sequence[float] = 0.0,
        bias_coefficients: Sequence[float] = (),
        bias_order: int = 3,
        noise_std: float = 0.0,
        noise_seed: int = 0,
        intensity_scale: float = 1.0,
        rician: bool = True,
        mask_background: bool = True,
        tissues_key: str = Keys.TISSUES,
        image_key: str = Keys.IMAGE,
        **kwargs,
    ) -> None:
        problems = [numbers_problem("tissue_intensities", tissue_intensities, least=1, minimum=0),
                    number_problem("gamma", gamma),
                    numbers_problem("blur_fwhm_mm", blur_fwhm_mm, length=3, minimum=0, scalar=True),
                    numbers_problem("bias_coefficients", bias_coefficients),
                    integer_problem("bias_order", bias_order, minimum=0),
                    number_problem("noise_std", noise_std, strict=False),
                    integer_problem("noise_seed", noise_seed, minimum=0),
                    number_problem("intensity_scale", intensity_scale)]
        if not any(problems[3:5]) and len(bias_coefficients) not in (0, num_bias_coefficients(bias_order)):
            problems.append(f"'bias_coefficients' has {len(bias_coefficients)} values; a bias field of order "
                            f"{bias_order} needs {num_bias_coefficients(bias_order)} (or none for no bias field)")
        raise_problems(type(self).__name__, problems)
        super().__init__(**kwargs)
        self.tissue_intensities = as_floats(tissue_intensities)
        self.gamma = float(gamma)
        self.blur_fwhm_mm = as_floats(blur_fwhm_mm, 3)
        self.bias_coefficients = as_floats(bias_coefficients)
        self.bias_order = int(bias_order)
        self.noise_std = float(noise_std)
        self.noise_seed = int(noise_seed)
        self.intensity_scale = float(intensity_scale)
        self.rician = bool(rician)
        self.mask_background = bool(mask_background)
        self.tissues_key = str(tissues_key)
        self.image_key = str(image_key)
        self.args_names = [
            "tissue_intensities",
            "gamma",
            "blur_fwhm_mm",
            "bias_coefficients",
            "bias_order",
            "noise_std",
            "noise_seed",
            "intensity_scale",
            "rician",
            "mask_background",
            "tissues_key",
            "image_key",
        ]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if self.tissues_key not in subject:
            raise KeyError(
                f"SiteAcquisition needs tissue maps under '{self.tissues_key}'; the subject has {sorted(subject)}"
            )
        tissues_image = subject[self.tissues_key]
        tissues = tissues_image.data.numpy().astype(np.float32, copy=False)
        if tissues.shape[0] != len(self.tissue_intensities):
            raise ValueError(
                f"'{self.tissues_key}' has {tissues.shape[0]} channels but {len(self.tissue_intensities)} "
                "tissue_intensities were given"
            )
        image = self.render(tissues, np.asarray(tissues_image.spacing, dtype=float))
        subject.add_image(
            tio.ScalarImage(tensor=torch.from_numpy(image[None]), affine=tissues_image.affine),
            self.image_key,
        )
        return subject

    def render(self, tissues: np.ndarray, spacing: np.ndarray) -> np.ndarray:
        """Render the image from a ``(C, X, Y, Z)`` array of tissue probabilities.

        Args:
            tissues: tissue probabilities, one channel per entry of ``tissue_intensities``.
            spacing: voxel size (mm) along each axis.

        Returns:
            The image, float32, shape ``(X, Y, Z)``.
        """
        clean = np.zeros(tissues.shape[1:], dtype=np.float32)
        for intensity, probability in zip(self.tissue_intensities, tissues):
            clean += np.float32(intensity) * np.clip(probability, 0.0, 1.0)
        if self.gamma != 1.0:
            clean = np.power(clean, np.float32(self.gamma))
        sigma = [fwhm / FWHM_PER_SIGMA / float(step) for fwhm, step in zip(self.blur_fwhm_mm, spacing)]
        if any(s > 0 for s in sigma):
            clean = ndimage.gaussian_filter(clean, sigma, mode="constant", cval=0.0)
        if self.bias_coefficients:
            clean *= polynomial_bias_field(clean.shape, self.bias_coefficients, self.bias_order)
        if self.noise_std > 0:
            rng = np.random.default_rng(self.noise_seed)
            noise = rng.standard_normal((2, *clean.shape), dtype=np.float32) * np.float32(self.noise_std)
            clean = np.hypot(clean + noise[0], noise[1]) if self.rician else clean + noise[0]
        image = (clean * np.float32(self.intensity_scale)).astype(np.float32)
        if self.mask_background:
            image[tissues.sum(axis=0) < BACKGROUND_THRESHOLD] = 0.0
        return image

