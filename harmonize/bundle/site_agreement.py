"""The age loss of the brain-age bundle's biased_agreement variant, built from its manifest's training ages and its
dataset's sites."""

from __future__ import annotations

import os
from typing import Any

from harmonize import defaults
from harmonize.data.manifest import read_manifest
from harmonize.keys import Keys, Split
from harmonize.losses import SiteAgreementLoss
from harmonize.workflows.brain_age import site_agreement_for

__all__ = ["site_agreement_loss"]


def site_agreement_loss(manifest: str | os.PathLike[str], dataset: Any,
                        agreement: float = defaults.SITE_AGREEMENT) -> SiteAgreementLoss:
    """:class:`~harmonize.losses.SiteAgreementLoss` for the ``train`` rows of ``manifest``, with one running offset
    per site of ``dataset.site_index`` (the training dataset's), built as
    :func:`~harmonize.workflows.brain_age.train_brain_age` builds it for ``site_agreement``
    (:func:`~harmonize.workflows.brain_age.site_agreement_for`).

    Raises:
        ManifestError: the manifest cannot be read.
        ConfigError: no training row has an age.
    """
    frame = read_manifest(manifest)
    train = frame[frame[Keys.SPLIT] == Split.TRAIN]
    return site_agreement_for(train, len(dataset.site_index), agreement)
