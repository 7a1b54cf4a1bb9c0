"""Closed-form linear erasure of the scanner from a network's features (LEACE), kept conditional on age.

LEACE (Belrose et al., "LEACE: Perfect linear concept erasure in closed form", NeurIPS 2023; the
``concept-erasure`` package) finds the smallest affine edit of the features after which no linear model can
read a concept ``z`` from them: the edited features have zero covariance with ``z``. Here ``z`` is the site
one-hot, minus ``p(site | age)`` when a prior is given: the part of the site that the subject's age does not
already tell. Since any function of age has zero covariance with that residual, erasing it leaves the
features' age information in place while removing what is left of the scanner, which matters in biased data
(sites of different ages), where erasing the plain site one-hot erases age with it.

Erasure is a fixed projection fitted on the training scans' features, so it applies to scans of any site,
including a scanner never seen in training (unlike ComBat, which needs each site's own scans). The task head
read the features before the edit, so a ridge regression of age is re-fitted on the erased training features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.utils import optional_import

from harmonize import defaults
from harmonize.audit.features import FeatureSet
from harmonize.errors import ConfigError, integer_problem
from harmonize.keys import Keys

LeaceFitter, _ = optional_import("concept_erasure", name="LeaceFitter")

__all__ = ["SiteEraser"]


@dataclass
class SiteEraser:
    """Fit LEACE on training features to erase the site, optionally beyond what a prior (age) tells.

    Args:
        num_sites: sites of the training data (site indices ``0..num_sites-1``).
        shrinkage: shrink the features' covariance estimate (needed with fewer scans than a few times the
            feature size).

    Example::

        eraser = SiteEraser(num_sites=4).fit(train_features, prior=ConditionalPrior(...)(batch))
        held_out = eraser(held_out_features)
    """

    num_sites: int
    shrinkage: bool = True

    def __post_init__(self) -> None:
        if problem := integer_problem("num_sites", self.num_sites, minimum=2):
            raise ConfigError("SiteEraser: invalid arguments.", problems=[f"{problem}: one site has nothing to erase"])
        self._eraser = None
        self._ridge = None

    def fit(self, train: FeatureSet, prior: np.ndarray | None = None) -> SiteEraser:
        """Fit the eraser on the training scans, then a ridge regression of age on their erased features.

        Args:
            train: features of the training scans, with ``site`` (indices) and ``age`` in ``meta``.
            prior: optional ``(n, num_sites)`` site distribution of each scan given its age
                (:class:`~harmonize.handlers.ConditionalPrior`); the eraser then removes only the residual
                ``onehot(site) - prior``.

        Raises:
            ConfigError: a site index outside ``0..num_sites-1``, or a prior of the wrong shape.
        """
        from sklearn.linear_model import RidgeCV

        sites = np.asarray(train.meta[Keys.SITE]).reshape(-1)
        if sites.size == 0 or sites.min() < 0 or sites.max() >= self.num_sites:
            raise ConfigError(f"SiteEraser.fit: training site indices must lie in 0..{self.num_sites - 1}, "
                              f"got {sorted(set(sites.tolist()))}.")
        z = np.eye(self.num_sites)[sites]
        if prior is not None:
            prior = np.asarray(prior, dtype=float)
            if prior.shape != z.shape:
                raise ConfigError(f"SiteEraser.fit: prior must have shape {z.shape} (scans, sites), got {prior.shape}.")
            z = z - prior
        x = torch.as_tensor(train.features, dtype=torch.float64)
        self._eraser = LeaceFitter.fit(x, torch.as_tensor(z), shrinkage=self.shrinkage).eraser
        erased = self._erase(train.features)
        self._ridge = RidgeCV(alphas=defaults.RIDGE_ALPHAS).fit(erased, train.meta[Keys.AGE].astype(float))
        return self

    def _erase(self, features: np.ndarray) -> np.ndarray:
        if self._eraser is None:
            raise ConfigError("SiteEraser: call fit() on the training features first.")
        return self._eraser(torch.as_tensor(features, dtype=torch.float64)).numpy()

    def __call__(self, fs: FeatureSet) -> FeatureSet:
        """The scans with their site erased from the features, and age predicted from the erased features."""
        erased = self._erase(fs.features)
        predictions = self._ridge.predict(erased).reshape(-1, 1)
        return FeatureSet(erased.astype(np.float32), predictions, dict(fs.meta))

