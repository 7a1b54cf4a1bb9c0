"""Mean and spread of the training ages, which set the brain-age network's output scale and the loss scale."""

from __future__ import annotations

import os

import numpy as np

from harmonize.data.manifest import read_manifest
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys, Split

__all__ = ["age_statistics"]


def age_statistics(manifest: str | os.PathLike[str]) -> tuple[float, float]:
    """Mean and standard deviation (years) of the ages of a manifest's ``train`` rows.

    :class:`~harmonize.networks.BrainAgeRegressor` takes them as ``age_offset``/``age_scale`` (the untrained
    network predicts the mean age) and :class:`~harmonize.losses.StandardisedMSELoss` as its ``scale``, as
    :func:`~harmonize.workflows.brain_age.train_brain_age` does. A zero spread is replaced by 1.

    Raises:
        ManifestError: the manifest cannot be read.
        HarmonizeError: no training row has an age.
    """
    frame = read_manifest(manifest)
    ages = frame.loc[frame[Keys.SPLIT] == Split.TRAIN, Keys.AGE].to_numpy(float)
    ages = ages[np.isfinite(ages)]
    if ages.size == 0:
        raise HarmonizeError(
            f"No training row of {manifest} has an age: brain-age training needs rows of split 'train' with their 'age'."
        )
    return float(ages.mean()), float(ages.std()) or 1.0
