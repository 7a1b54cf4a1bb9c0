"""ComBat on a network's features: fitted on the training scans' :class:`~harmonize.audit.features.FeatureSet`,
applied to the audited scans' (the ComBat baseline of harmonize compare)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harmonize.audit.combat import ComBatHarmonizer
from harmonize.audit.combat_inputs import _listed
from harmonize.audit.features import FeatureSet
from harmonize.errors import ConfigError
from harmonize.keys import Keys, UnseenSite

__all__ = ["combat_feature_set"]


def _feature_set_covariates(fs: FeatureSet, protected: Sequence[str], what: str) -> dict[str, np.ndarray]:
    """Protected covariates from a feature set's metadata; a negative sex code (missing) becomes NaN."""
    missing = [p for p in protected if p not in fs.meta]
    if missing:
        raise ConfigError(f"{what}: metadata has no {missing} (available: {sorted(fs.meta)}).")
    out = {}
    for name in protected:
        values = np.asarray(fs.meta[name], dtype=float).copy()
        if name == Keys.SEX:
            values[values < 0] = np.nan
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            ids = fs.meta.get(Keys.SUBJECT_ID)
            who = [str(ids[i]) for i in bad] if ids is not None else bad.tolist()
            raise ConfigError(
                f"{what}: '{name}' is missing for {bad.size} scan(s) {_listed(who)}. Drop them "
                f"(FeatureSet.subset) or leave '{name}' out of protected."
            )
        out[name] = values
    return out


def combat_feature_set(
    train: FeatureSet,
    test: FeatureSet,
    protected: Sequence[str] = (Keys.AGE, Keys.SEX),
    eb: bool = True,
    smooth_terms: Sequence[str] = (),
    unseen: str = UnseenSite.ERROR,
) -> FeatureSet:
    """Fit ComBat on ``train``'s features and return ``test`` with its features harmonised.

    This is how researchers use ComBat on a network's features: the sites are the metadata's ``site`` indices
    and the protected covariates come from the metadata (a negative ``sex`` code counts as missing).

    Args:
        train: features of the fitting scans (every row needs a known site, index >= 0).
        test: features to harmonise; rows of site ``-1`` (unseen in training) follow ``unseen``.
        protected: metadata keys whose effects are preserved.
        eb: empirical-Bayes estimates.
        smooth_terms: protected covariates modelled as smooth terms.
        unseen: ``"error"`` or ``"passthrough"`` for rows of sites that are not in ``train``.

    Returns:
        A new :class:`FeatureSet` with ``test``'s predictions and metadata and harmonised features.

    Raises:
        ConfigError: missing metadata or covariates, or training rows of an unknown site.
        HarmonizeError: test rows of an unseen site with ``unseen="error"``.
    """
    for name, fs in (("train", train), ("test", test)):
        if Keys.SITE not in fs.meta:
            raise ConfigError(
                f"combat_feature_set: {name} metadata has no '{Keys.SITE}' (available: {sorted(fs.meta)})."
            )
    train_sites = np.asarray(train.meta[Keys.SITE])
    if (train_sites < 0).any():
        raise ConfigError(
            f"combat_feature_set: {int((train_sites < 0).sum())} training row(s) have site -1 (a site unknown to the "
            "network); ComBat needs a known site for every fitting row. Drop them with FeatureSet.subset."
        )
    harmonizer = ComBatHarmonizer(protected, eb=eb, smooth_terms=smooth_terms, unseen=unseen)
    harmonizer.fit(train.features, train_sites, _feature_set_covariates(train, protected, "combat_feature_set (train)"))
    test_covariates = _feature_set_covariates(test, protected, "combat_feature_set (test)")
    features = harmonizer.transform(test.features, np.asarray(test.meta[Keys.SITE]), test_covariates)
    return FeatureSet(features.astype(np.asarray(test.features).dtype, copy=False), test.predictions, dict(test.meta))


# ---------------------------------------------------------------------------------------- image-derived measures
