"""An evaluator handler that writes each predicted segmentation as NIfTI, on the input image's grid."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import torch

from harmonize.bundle._samples import as_samples
from harmonize.io import atomic_write
from harmonize.keys import Keys

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["SegmentationWriter", "image_affine"]

logger = logging.getLogger(__name__)

#: Suffix of the written files.
NIFTI_SUFFIX = ".nii.gz"


def image_affine(image: Any) -> np.ndarray:
    """The voxel-to-world affine of the file an image was loaded from (its MetaTensor's ``original_affine``,
    else its ``affine``).

    Raises:
        ValueError: the image carries no affine (it was not loaded by MONAI from a file).
    """
    meta = getattr(image, "meta", None) or {}
    for key in ("original_affine", "affine"):
        if meta.get(key) is not None:
            return np.asarray(torch.as_tensor(meta[key]).cpu(), dtype=np.float64)
    raise ValueError("The image has no affine in its metadata: load it with MONAI's LoadImaged.")


class SegmentationWriter:
    """Write ``<output_dir>/<subject_id>_<postfix>.nii.gz`` for every scan an evaluator segments.

    The label map is the argmax over the prediction's channels (0 background, then the classes in channel
    order: 1 CSF, 2 GM, 3 WM for the tissue bundle), stored as uint8 with the affine of the input file, so it
    overlays the input in any viewer. The network must see the image on its own grid (no resampling or
    cropping before it), as the bundle's inference pipeline does. Files are written atomically.

    Args:
        output_dir: folder of the written files (created).
        postfix: added to the scan's id in the file name.
        pred_key: key of the prediction (channel-first logits or probabilities) in the engine's output.
        id_key: key of the scan's id in the batch.
        image_key: key of the input image in the batch (its affine is used).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        postfix: str = "seg",
        pred_key: str = "pred",
        id_key: str = Keys.SUBJECT_ID.value,
        image_key: str = Keys.IMAGE.value,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.pred_key = pred_key
        self.id_key = id_key
        self.image_key = image_key
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Register on the engine: write the segmentations of every iteration."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the list of written files."""
        self.written = []

    def path_of(self, subject_id: str) -> Path:
        """Where the segmentation of a scan is written."""
        return self.output_dir / f"{subject_id}_{self.postfix}{NIFTI_SUFFIX}"

    def write_batch(self, engine: Engine) -> None:
        """Write the segmentations of the engine's current batch."""
        for sample, out in zip(as_samples(engine.state.batch), as_samples(engine.state.output)):
            pred = torch.as_tensor(out[self.pred_key]).detach().cpu()
            labels = pred.argmax(dim=0).numpy().astype(np.uint8)
            self.written.append(self.write(str(sample[self.id_key]), labels, image_affine(sample[self.image_key])))

    def write(self, subject_id: str, labels: np.ndarray, affine: np.ndarray) -> Path:
        """Write one label map with the given affine and return its path."""
        image = nib.Nifti1Image(labels, affine)
        image.header.set_xyzt_units("mm")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        path = atomic_write(self.path_of(subject_id), lambda tmp: nib.save(image, tmp))
        logger.debug("Wrote %s", path)
        return path
