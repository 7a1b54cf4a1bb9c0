"""Evaluator handlers that write reconstructions: NIfTI on the input file's grid, or fastMRI HDF5 volumes.

- :class:`ReconstructionWriter`: one NIfTI per input volume (``inference.json``).
- :class:`FastMRIReconstructionWriter`: one HDF5 file per fastMRI input, its slices gathered into a
  ``reconstruction`` dataset as in fastMRI's submissions (``inference_fastmri.json``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import torch
from monai.utils import optional_import

from harmonize.bundle._samples import as_samples, source_file
from harmonize.errors import HarmonizeError
from harmonize.io import atomic_write
from harmonize.keys import Keys
from harmonize.output_dir import check_replaceable, record_written

if TYPE_CHECKING:
    from ignite.engine import Engine

h5py, _ = optional_import("h5py")

__all__ = ["FastMRIReconstructionWriter", "ReconstructionWriter", "output_stem"]

logger = logging.getLogger(__name__)

#: Suffix of the written files.
NIFTI_SUFFIX = ".nii.gz"
#: Suffix of fastMRI files.
H5_SUFFIX = ".h5"
#: The dataset of a fastMRI file that holds the reconstruction (fastMRI's submission format).
RECONSTRUCTION_DATASET = "reconstruction"
#: Suffixes removed from an input's name to make the output's stem.
_INPUT_SUFFIXES = (".nii.gz", ".nii", H5_SUFFIX)


#: Who writes, in the record of outputs and in a refusal.
WRITER = "Bundle inference"


def output_stem(source: str | os.PathLike[str]) -> str:
    """The name of an input file without its folder and NIfTI suffix (``scans/sub-01_T1w.nii.gz`` -> ``sub-01_T1w``)."""
    name = Path(source).name
    for suffix in _INPUT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class ReconstructionWriter:
    """Write ``<output_dir>/<input name>_<postfix>.nii.gz`` for every volume an evaluator reconstructs.

    The prediction must already be back on the input's grid and intensity scale (the bundle's postprocessing
    inverts the reorientation and restores the scale). It is written as float32 with the input file's affine and
    spatial shape (a 2D input gives a 2D output), so it overlays the input in any viewer. Files are written
    atomically; two inputs with the same name (from different folders) in one run are refused rather than written
    over each other (:func:`harmonize.bundle.recon.check_inference_inputs` checks this, and that no output would
    replace an input, before the run).

    Args:
        output_dir: folder of the written files (created).
        postfix: added to the input's name.
        pred_key: key of the reconstruction ``(1, *spatial)`` in the engine's output.
        image_key: key of the input image in the batch (its metadata gives the file name, affine and shape).

    Raises:
        HarmonizeError: an output would overwrite another output of the same run.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        postfix: str = "recon",
        pred_key: str = "pred",
        image_key: str = Keys.IMAGE.value,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.pred_key = pred_key
        self.image_key = image_key
        self.written: dict[Path, str] = {}

    def attach(self, engine: Engine) -> None:
        """Register on the engine: write the reconstructions of every iteration."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_batch)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the files written so far."""
        self.written = {}

    def path_of(self, source: str | os.PathLike[str]) -> Path:
        """Where the reconstruction of an input file is written."""
        return self.output_dir / f"{output_stem(source)}_{self.postfix}{NIFTI_SUFFIX}"

    def write_batch(self, engine: Engine) -> None:
        """Write the reconstructions of the engine's current batch."""
        for sample, out in zip(as_samples(engine.state.batch), as_samples(engine.state.output), strict=True):
            image = sample[self.image_key]
            meta = getattr(image, "meta", None) or {}
            affine = meta.get("original_affine", meta.get("affine"))
            if affine is None:
                raise ValueError("The input image has no affine in its metadata: load it with MONAI's LoadImaged.")
            shape = tuple(int(s) for s in torch.as_tensor(meta.get("spatial_shape", image.shape[1:])).flatten())
            pred = torch.as_tensor(out[self.pred_key]).detach().cpu().float()
            self.write(source_file(image), pred.reshape(shape).numpy(), np.asarray(torch.as_tensor(affine).cpu()))

    def write(self, source: str, volume: np.ndarray, affine: np.ndarray) -> Path:
        """Write one reconstruction with the given affine and return its path.

        Raises:
            HarmonizeError: another input of this run was written there.
        """
        path = self.path_of(source)
        if path in self.written:
            raise HarmonizeError(
                f"{self.written[path]} and {source} have the same name, so both reconstructions would be written to "
                f"{path}: rename one, or reconstruct them in separate runs with different output_dir."
            )
        image = nib.Nifti1Image(volume.astype(np.float32), affine.astype(np.float64))
        image.header.set_xyzt_units("mm")
        image.set_qform(image.affine, code=1)
        image.set_sform(image.affine, code=1)
        check_replaceable([path], WRITER)
        atomic_write(path, lambda tmp: nib.save(image, tmp))
        record_written([path], WRITER)
        self.written[path] = source
        logger.info("Reconstructed %s -> %s", source, path)
        return path


class FastMRIReconstructionWriter:
    """Write ``<output_dir>/<input name>.h5`` with a ``reconstruction`` dataset ``(slices, H, W)`` per fastMRI file.

    An evaluator over :class:`~harmonize.recon.fastmri.FastMRISliceDataset` sees one slice per sample; this handler
    gathers the slices of each file (by ``id_key`` and ``slice_key``) and writes every file when the evaluator's
    epoch completes, in slice order, as float32 on the file's intensity scale (the bundle's postprocessing restores
    it). The name is the input's, as fastMRI's challenge expects, so ``output_dir`` must not be the input folder
    (:func:`harmonize.bundle.recon.check_inference_inputs` checks). Files are written atomically.

    Args:
        output_dir: folder of the written files (created).
        pred_key: key of the reconstruction ``(1, H, W)`` in the engine's output.
        id_key: key of the file's id (its name without ``.h5``) in the batch.
        slice_key: key of the slice index in the batch.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        pred_key: str = "pred",
        id_key: str = Keys.VOLUME_ID.value,
        slice_key: str = Keys.SLICE_INDEX.value,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.pred_key = pred_key
        self.id_key = id_key
        self.slice_key = slice_key
        self.slices: dict[str, dict[int, np.ndarray]] = {}
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        """Register on the engine: gather slices every iteration, write the files when the epoch completes."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.gather_batch)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write_all)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the gathered slices and the written files."""
        self.slices = {}
        self.written = []

    def path_of(self, source: str | os.PathLike[str]) -> Path:
        """Where the reconstruction of an input file is written."""
        return self.output_dir / f"{output_stem(source)}{H5_SUFFIX}"

    def gather_batch(self, engine: Engine) -> None:
        """Keep the reconstructed slices of the engine's current batch."""
        for sample, out in zip(as_samples(engine.state.batch), as_samples(engine.state.output), strict=True):
            pred = torch.as_tensor(out[self.pred_key]).detach().cpu().float()
            self.add(str(sample[self.id_key]), int(sample[self.slice_key]), pred.reshape(pred.shape[-2:]).numpy())

    def add(self, volume_id: str, slice_index: int, image: np.ndarray) -> None:
        """Keep one reconstructed slice ``(H, W)``."""
        self.slices.setdefault(volume_id, {})[slice_index] = image

    def write_all(self, engine: Engine | None = None) -> list[Path]:
        """Write every gathered file and return the paths."""
        for volume_id, slices in self.slices.items():
            volume = np.stack([slices[s] for s in sorted(slices)]).astype(np.float32)
            path = self.output_dir / f"{volume_id}{H5_SUFFIX}"

            def write(tmp: Path, volume: np.ndarray = volume) -> None:
                with h5py.File(tmp, "w") as f:
                    f.create_dataset(RECONSTRUCTION_DATASET, data=volume)

            check_replaceable([path], WRITER)
            self.written.append(atomic_write(path, write))
            record_written([path], WRITER)
            logger.info("Reconstructed %s (%d slices) -> %s", volume_id, len(slices), path)
        return self.written
