"""An evaluator handler that writes each predicted segmentation as NIfTI, on the input image's grid."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import torch

from harmonize.bundle._samples import as_samples, source_file
from harmonize.io import atomic_write, write_text_atomic
from harmonize.keys import Keys
from harmonize.output_dir import check_replaceable, record_written

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["SegmentationWriter", "image_affine"]

logger = logging.getLogger(__name__)

#: Who writes, in the record of outputs and in a refusal.
WRITER = "Bundle inference"
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
    overlays the input in any viewer. The prediction must be on the input file's grid: the bundle's inference
    maps it back with ``Invertd`` before this handler runs. Files are written atomically. With ``index_file``,
    a CSV lists every written file with the scan's ``extra_keys`` (e.g. which intensity landmarks were used).
    An existing file is replaced only when harmonize wrote it (:func:`harmonize.output_dir.check_replaceable`):
    every target of the run is checked when it starts, before any scan is read.

    Args:
        output_dir: folder of the written files (created).
        postfix: added to the scan's id in the file name.
        pred_key: key of the prediction (channel-first logits or probabilities) in the engine's output.
        id_key: key of the scan's id in the batch.
        image_key: key of the input image in the batch (its affine is used).
        index_file: a CSV written when the run completes (columns ``subject_id``, ``image``, ``segmentation``,
            then ``extra_keys``); None writes none.
        extra_keys: batch keys written as further columns of ``index_file``.

    Raises:
        ValueError: (when writing) a prediction whose shape is not the input file's (it was not mapped back).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        postfix: str = "seg",
        pred_key: str = "pred",
        id_key: str = Keys.SUBJECT_ID.value,
        image_key: str = Keys.IMAGE.value,
        index_file: str | os.PathLike[str] | None = None,
        extra_keys: Sequence[str] = (),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.pred_key = pred_key
        self.id_key = id_key
        self.image_key = image_key
        self.index_file = None if index_file is None else Path(index_file)
        self.extra_keys = tuple(str(k) for k in extra_keys)
        self.written: list[Path] = []
        self.rows: list[tuple[str, ...]] = []

    def attach(self, engine: Engine) -> None:
        """Register on the engine: write the segmentations of every iteration."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)
        if self.index_file is not None:
            engine.add_event_handler(Events.COMPLETED, self.write_index)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the list of written files; refuse to replace any file of the run's that harmonize did not write."""
        self.written = []
        self.rows = []
        items = getattr(getattr(getattr(engine, "data_loader", None), "dataset", None), "data", None)
        if isinstance(items, Sequence):
            targets = [self.path_of(str(item[self.id_key])) for item in items
                       if isinstance(item, dict) and self.id_key in item]
            check_replaceable(targets + ([self.index_file] if self.index_file is not None else []), WRITER)

    def path_of(self, subject_id: str) -> Path:
        """Where the segmentation of a scan is written."""
        return self.output_dir / f"{subject_id}_{self.postfix}{NIFTI_SUFFIX}"

    def write_batch(self, engine: Engine) -> None:
        """Write the segmentations of the engine's current batch."""
        for sample, out in zip(as_samples(engine.state.batch), as_samples(engine.state.output)):
            pred = torch.as_tensor(out[self.pred_key]).detach().cpu()
            labels = pred.argmax(dim=0).numpy().astype(np.uint8)
            image = sample[self.image_key]
            shape = (getattr(image, "meta", None) or {}).get("spatial_shape")
            if shape is not None and tuple(int(s) for s in np.asarray(shape).reshape(-1)) != labels.shape:
                raise ValueError(f"{source_file(image)}: the prediction's shape {labels.shape} is not the input's "
                                 f"{tuple(np.asarray(shape).reshape(-1).tolist())}; map it back with Invertd first.")
            path = self.write(str(sample[self.id_key]), labels, image_affine(image))
            self.written.append(path)
            self.rows.append((str(sample[self.id_key]), source_file(image), str(path),
                              *(str(sample.get(k, "")) for k in self.extra_keys)))

    def write_index(self, engine: Engine | None = None) -> Path | None:
        """Write :attr:`index_file` (atomically) and return its path."""
        if self.index_file is None:
            return None
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("subject_id", "image", "segmentation", *self.extra_keys))
        writer.writerows(self.rows)
        check_replaceable([self.index_file], WRITER)
        write_text_atomic(self.index_file, buffer.getvalue())
        record_written([self.index_file], WRITER)
        logger.info("Wrote %d segmentation(s), listed in %s", len(self.rows), self.index_file)
        return self.index_file

    def write(self, subject_id: str, labels: np.ndarray, affine: np.ndarray) -> Path:
        """Write one label map with the given affine and return its path."""
        image = nib.Nifti1Image(labels, affine)
        image.header.set_xyzt_units("mm")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        check_replaceable([self.path_of(subject_id)], WRITER)
        path = atomic_write(self.path_of(subject_id), lambda tmp: nib.save(image, tmp))
        record_written([path], WRITER)
        logger.debug("Wrote %s", path)
        return path
