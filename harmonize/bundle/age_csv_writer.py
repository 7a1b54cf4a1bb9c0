"""An evaluator handler that writes the predicted ages of a run to one CSV file."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harmonize.bundle._samples import as_samples, source_file
from harmonize.distributed import is_distributed, is_main_process, world_size
from harmonize.io import write_text_atomic
from harmonize.keys import Keys
from harmonize.output_dir import check_replaceable, record_written

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["AGE_CSV_COLUMNS", "AgeCsvWriter"]

logger = logging.getLogger(__name__)

#: Columns of the written CSV.
AGE_CSV_COLUMNS = ("subject_id", "image", "predicted_age")
#: Decimals of the written ages.
AGE_DECIMALS = 3
#: Who writes, in the record of outputs and in a refusal.
WRITER = "Bundle inference"


class AgeCsvWriter:
    """Collect an evaluator's predicted ages and write them to a CSV when the run completes (atomically).

    Attach it to a ``SupervisedEvaluator`` whose batches carry ``subject_id`` and ``image``; the CSV has the
    columns :data:`AGE_CSV_COLUMNS`, then ``extra_keys``, one row per scan, in the order they were predicted.

    Args:
        output_file: the CSV to write; its folder is created.
        pred_key: key of the prediction in the engine's output.
        id_key: key of the scan's id in the batch.
        image_key: key of the image in the batch (its source file goes into the ``image`` column).
        extra_keys: further batch keys written as columns (e.g. ``intensity_reference`` and ``warnings`` of
            bundle inference); a sample without one gets ''.
    """

    def __init__(
        self,
        output_file: str | os.PathLike[str],
        pred_key: str = "pred",
        id_key: str = Keys.SUBJECT_ID.value,
        image_key: str = Keys.IMAGE.value,
        extra_keys: Sequence[str] = (),
    ) -> None:
        self.output_file = Path(output_file)
        self.pred_key = pred_key
        self.id_key = id_key
        self.image_key = image_key
        self.extra_keys = tuple(str(k) for k in extra_keys)
        self.rows: list[tuple[Any, ...]] = []

    def attach(self, engine: Engine) -> None:
        """Register on the engine: reset at the start, collect every iteration, write at completion."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the collected rows; refuse (before any scan is read) to replace a file harmonize did not write."""
        self.rows = []
        if engine is not None and is_main_process():
            check_replaceable([self.output_file], WRITER)

    def collect(self, engine: Engine) -> None:
        """Add the rows of the engine's current batch."""
        for sample, out in zip(as_samples(engine.state.batch), as_samples(engine.state.output)):
            age = float(torch.as_tensor(out[self.pred_key]).reshape(-1)[0])
            extra = tuple(str(sample.get(key, "")) for key in self.extra_keys)
            self.rows.append((str(sample[self.id_key]), source_file(sample.get(self.image_key)), age, *extra))

    def write(self, engine: Engine | None = None) -> Path | None:
        """Write the collected rows to :attr:`output_file` and return its path.

        Under ``torch.distributed`` (``multi_gpu_evaluate.json``) every process collects its own shard: the rows
        are gathered, and the process of rank 0 writes them all (the others return None).
        """
        if is_distributed():
            shards: list[Any] = [None] * world_size()
            torch.distributed.all_gather_object(shards, self.rows)
            if not is_main_process():
                return None
            self.rows = [row for shard in shards for row in shard]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(AGE_CSV_COLUMNS + self.extra_keys)
        writer.writerows((sid, image, f"{age:.{AGE_DECIMALS}f}", *extra) for sid, image, age, *extra in self.rows)
        check_replaceable([self.output_file], WRITER)
        write_text_atomic(self.output_file, buffer.getvalue())
        record_written([self.output_file], WRITER)
        logger.info("Wrote %d predicted age(s) to %s", len(self.rows), self.output_file)
        return self.output_file
