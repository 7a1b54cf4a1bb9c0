"""The features of all training batches, as the training forward pass sees them: what the per-epoch re-fit of the
domain heads (:class:`~harmonize.handlers.RefitHeads`) and the evidence gate (:class:`~harmonize.handlers.EvidenceGate`)
read at the start of an epoch, from every process of a distributed run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from harmonize.data.samplers import same_epoch
from harmonize.distributed import gather_rows
from harmonize.errors import ConfigError
from harmonize.handlers.confound import batch_targets

if TYPE_CHECKING:
    from harmonize.handlers.domain_unlearning import DomainUnlearningHandler

__all__ = ["Gathered", "all_features", "epoch_features"]

#: Features ``(n, d)``, each confound's targets ``(n,)`` and each asked batch key's values ``(n,)``.
Gathered = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]


@torch.no_grad()
def all_features(unlearner: DomainUnlearningHandler, loader: Iterable[Mapping[str, Any]],
                 inputs: Callable[[Any], torch.Tensor] | None = None, epoch: int | None = None,
                 keys: Sequence[str] = ()) -> Gathered:
    """Detached features, targets and the batch values of ``keys`` (those a batch has, as floats) of every batch of
    ``loader``, as the training forward pass sees them.

    The network runs in training mode; its buffers (BatchNorm statistics) are restored afterwards. The pass draws
    the batches of ``epoch`` (0-based; default: the next) and leaves the loader's sampler where it was
    (:func:`~harmonize.data.samplers.same_epoch`). Under ``torch.distributed`` each process reads its own shard of
    the data, and every process receives the rows of all of them, in rank order
    (:func:`~harmonize.distributed.gather_rows`).
    """
    from monai.utils import CommonKeys

    network = unlearner.network
    device = next(network.parameters()).device
    buffers = {name: b.clone() for name, b in network.named_buffers()}
    features, targets, values = [], {c.name: [] for c in unlearner.confounds}, {str(k): [] for k in keys}
    try:
        with same_epoch(loader, epoch):  # training then draws the batches it would have drawn without this pass
            for batch in loader:
                targets_of_batch, _ = batch_targets(unlearner.confounds, batch, unlearner.sample_mask, device)
                unlearner.taps.clear()
                image = inputs(batch) if inputs is not None else torch.as_tensor(batch[CommonKeys.IMAGE])
                network(image.to(device))
                features.append(unlearner.taps.features().detach())
                for name, t in targets_of_batch.items():
                    targets[name].append(t)
                for key in values:
                    if key in batch:
                        values[key].append(torch.as_tensor(batch[key], dtype=torch.float32).reshape(-1).to(device))
    finally:
        unlearner.taps.clear()
        for name, b in network.named_buffers():
            b.copy_(buffers[name])
    if not features:
        raise ConfigError("The heads' re-fit and the evidence gate need a training loader with at least one batch.")
    return (gather_rows(torch.cat(features)), {name: gather_rows(torch.cat(t)) for name, t in targets.items()},
            {key: gather_rows(torch.cat(v)) for key, v in values.items() if len(v) == len(features)})


def epoch_features(unlearner: DomainUnlearningHandler, engine: Any, keys: Sequence[str] = ()) -> Gathered | None:
    """:func:`all_features` of the trainer's batches of the epoch that starts, as its ``prepare_batch`` gives them;
    ``None`` when the run was resumed in the middle of the epoch (what was fitted at its start is in the checkpoint).
    """
    length = engine.state.epoch_length
    if length and engine.state.iteration > (engine.state.epoch - 1) * length:
        return None
    device = next(unlearner.network.parameters()).device

    def inputs(batch: Mapping[str, Any]) -> torch.Tensor:
        return engine.prepare_batch(batch, device, engine.non_blocking)[0]

    return all_features(unlearner, engine.data_loader, inputs, engine.state.epoch - 1, keys)
