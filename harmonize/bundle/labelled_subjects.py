"""Which training subjects keep their task label in the semi-supervised variant of a bundle."""

from __future__ import annotations

import os

from harmonize import defaults
from harmonize.data.labelled_subset import labelled_subset
from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError, number_problem
from harmonize.keys import Keys, Split

__all__ = ["labelled_subjects"]


def labelled_subjects(
    manifest: str | os.PathLike[str], fraction: float = 1.0, seed: int = defaults.SEED
) -> set[str] | None:
    """Subject ids whose task label the trainer may use: ``fraction`` of each site's training subjects.

    Semi-supervised training (Dinsdale et al. 2021): the others still go through the network, so the unlearning
    uses every subject, but :class:`~harmonize.workflows.prepare_batch.PrepareTargetBatch` blanks their targets
    and :class:`~harmonize.losses.MaskedLoss` skips them.

    Args:
        manifest: the training manifest.
        fraction: in (0, 1]; 1 keeps every label (returns ``None``).
        seed: seed of the draw.

    Raises:
        ConfigError: ``fraction`` outside (0, 1].
    """
    if problem := number_problem("labelled_fraction", fraction, maximum=1):
        raise ConfigError("Invalid labelled fraction.", problems=[problem])
    if fraction >= 1:
        return None
    frame = read_manifest(manifest)
    return labelled_subset(  # the same draw as train_brain_age's
        frame[frame[Keys.SPLIT] == Split.TRAIN], fraction, seed)
