"""Per-volume PSNR and SSIM of an evaluator's reconstructions, grouped by evaluation set (BTA / KTA / UA)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import CommonKeys, optional_import

from harmonize.distributed import is_distributed
from harmonize.errors import ConfigError
from harmonize.keys import Keys
from harmonize.metrics.reconstruction import PSNR, SSIM, mean_metrics, volume_metrics

Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["ReconstructionMetricsHandler"]

logger = logging.getLogger(__name__)


class ReconstructionMetricsHandler:
    """Collect an evaluator's reconstructions and score them per volume, for each evaluation set.

    Attach it to a ``SupervisedEvaluator`` (``decollate=False``) whose batches carry the set of each sample
    (``set_key``, e.g. ``bta`` / ``kta`` / ``ua`` from :func:`harmonize.bundle.recon.evaluation_dataset`) and its
    volume (``id_key``). At the end of the run, ``engine.state.metrics`` holds ``<set>_psnr`` and ``<set>_ssim``
    (the mean over volumes of :func:`~harmonize.metrics.reconstruction.volume_metrics`, as in fastMRI) for every
    set seen, and, with ``floor_key``, ``zero_filled_<set>_psnr`` / ``_ssim`` of the batch's ``floor_key``
    (the zero-filled input) scored the same way: the floor a network should beat.

    Under ``torch.distributed`` each process evaluates a shard of the data (a ``DistributedSampler``): the
    handler gathers every shard before scoring, so every process gets the metrics of the whole data set.

    Args:
        set_key: batch key naming each sample's evaluation set.
        id_key: batch key of each sample's volume id.
        floor_key: batch key of a reference reconstruction to score too (``None`` for none).
        floor_prefix: prefix of the reference's metric names.
    """

    def __init__(
        self,
        set_key: str = Keys.EVAL_SET,
        id_key: str = Keys.VOLUME_ID,
        floor_key: str | None = Keys.IMAGE,
        floor_prefix: str = "zero_filled",
    ) -> None:
        self.set_key = set_key
        self.id_key = id_key
        self.floor_key = floor_key
        self.floor_prefix = floor_prefix
        self._reset()

    def _reset(self, engine: Any = None) -> None:
        self._pred: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._target: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._floor: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._ids: dict[str, list[str]] = defaultdict(list)

    def attach(self, engine: Any) -> None:
        """Reset at each run's start, collect every iteration, score at the epoch's end."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.compute)

    def collect(self, engine: Any) -> None:
        """Keep the iteration's predictions, targets (and references) on the CPU, by evaluation set."""
        batch, output = engine.state.batch, engine.state.output
        if not isinstance(output, dict) or CommonKeys.PRED not in output:
            raise ConfigError(
                "ReconstructionMetricsHandler needs the evaluator's batched output (a dict with 'pred' and "
                "'label'): build the SupervisedEvaluator with decollate=False."
            )
        missing = [str(k) for k in (self.set_key, self.id_key, self.floor_key) if k is not None and k not in batch]
        if missing:
            raise ConfigError(
                f"ReconstructionMetricsHandler: the batch lacks key(s) {missing} (it has {sorted(map(str, batch))}); "
                "evaluate a dataset from harmonize.bundle.recon.evaluation_dataset."
            )
        pred = torch.as_tensor(output[CommonKeys.PRED]).detach().float().cpu()
        target = torch.as_tensor(output[CommonKeys.LABEL]).detach().float().cpu()
        floor = torch.as_tensor(batch[self.floor_key]).float().cpu() if self.floor_key is not None else None
        sets: Sequence[str] = [str(s) for s in batch[self.set_key]]
        ids: Sequence[str] = [str(v) for v in batch[self.id_key]]
        for i, name in enumerate(sets):
            self._pred[name].append(pred[i : i + 1])
            self._target[name].append(target[i : i + 1])
            self._ids[name].append(ids[i])
            if floor is not None:
                self._floor[name].append(floor[i : i + 1])

    def _gathered(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[str]]]:
        """Each set's predictions, targets, references and volume ids; from every process when distributed.

        Under ``torch.distributed`` (``multi_gpu_evaluate.json``: each process evaluates a shard of the slices), a
        volume's slices may lie in several shards, so every process gathers them all before scoring.
        """
        local = {name: (torch.cat(self._pred[name]), torch.cat(self._target[name]),
                        torch.cat(self._floor[name]) if self._floor[name] else None, list(self._ids[name]))
                 for name in self._pred}
        if not is_distributed():
            return local
        shards: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(shards, local)
        merged: dict[str, list[Any]] = {}
        for shard in shards:
            for name, (pred, target, floor, ids) in shard.items():
                entry = merged.setdefault(name, [[], [], [], []])
                entry[0].append(pred)
                entry[1].append(target)
                if floor is not None:
                    entry[2].append(floor)
                entry[3] += ids
        return {name: (torch.cat(p), torch.cat(t), torch.cat(f) if f else None, ids)
                for name, (p, t, f, ids) in merged.items()}

    def compute(self, engine: Any) -> None:
        """Write each set's mean per-volume PSNR and SSIM into ``engine.state.metrics``."""
        for name, (pred, target, floor, ids) in sorted(self._gathered().items()):
            scores = mean_metrics(volume_metrics(pred, target, ids))
            for metric in (PSNR, SSIM):
                engine.state.metrics[f"{name}_{metric}"] = scores[metric]
            if floor is not None:
                floor_scores = mean_metrics(volume_metrics(floor, target, ids))
                for metric in (PSNR, SSIM):
                    engine.state.metrics[f"{self.floor_prefix}_{name}_{metric}"] = floor_scores[metric]
