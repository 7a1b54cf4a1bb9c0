"""ComBat harmonisation, the baseline that researchers know, through neuroHarmonize.

ComBat (Johnson, Li & Rabinovic, Biostatistics 2007; Fortin et al., NeuroImage 2017 and 2018) models each
feature ``v`` of scan ``j`` at site ``i`` as ``y_ijv = a_v + X_ij b_v + gamma_iv + delta_iv e_ijv``: the
protected covariates ``X`` (age, sex) keep their effect ``b_v``, while the additive (``gamma``) and
multiplicative (``delta``) site effects are estimated, shrunk towards each other across features by empirical
Bayes, and removed. neuroHarmonize (Pomponio et al., NeuroImage 2020) adds applying a fitted model to new scans
and non-linear (GAM) covariate terms; this module wraps it and does not re-implement ComBat.

The helpers :func:`tissue_volumes` and :func:`regional_intensities` turn images and label maps into the
image-derived measures (tissue volumes, mean tissue intensities) that researchers usually harmonise with ComBat,
and :func:`combat_feature_set` harmonises the features of a network the same way, for the audit.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harmonize.audit.combat_inputs import (
    _as_site_labels,
    _check_features,
    _covariate_frame,
    _listed,
    _quiet,
    _spline_basis,
)
from harmonize.audit.regional_measures import (
    TISSUE_LABELS,
    regional_intensities,
    tissue_volumes,
)
from harmonize.errors import ConfigError, HarmonizeError, check_option, option_value, raise_problems
from harmonize.io import atomic_write
from harmonize.keys import Keys, UnseenSite

__all__ = [
    "TISSUE_LABELS",
    "ComBatHarmonizer",
    "regional_intensities",
    "tissue_volumes",
]

logger = logging.getLogger(__name__)

#: Fewest scans per site: ComBat estimates each site's variance (with one degree of freedom used by the mean).
MIN_ROWS_PER_SITE = 2
#: Fewest sites ComBat can harmonise.
MIN_SITES = 2
#: Version of the layout of :meth:`ComBatHarmonizer.state_dict` and of the saved file.
STATE_VERSION = 1
#: neuroHarmonize's name of the site column.
_SITE_COLUMN = "SITE"
#: neuroHarmonize 2.4.5's ``harmonizationLearn`` re-seeds numpy's *global* generator from the OS when
#: ``seed is None`` (its check is inverted) and does nothing with an int. Any int keeps the global state untouched;
#: the estimation itself draws no random numbers, so the value is irrelevant.
_NEUROHARMONIZE_SEED = 0
#: Settings in a harmonizer's state.
_SETTINGS = ("version", "protected", "eb", "smooth_terms", "unseen")
#: Arrays of a neuroHarmonize model that ``harmonizationApply`` reads (kept in the state).
_MODEL_ARRAYS = ("B_hat", "stand_mean", "var_pooled", "gamma_star", "delta_star")


class ComBatHarmonizer:
    """Fit ComBat on some scans' features, then remove the site effects from those or other scans.

    The site effects are removed while the effects of the ``protected`` covariates (e.g. age and sex) are kept,
    as in Fortin et al., NeuroImage 167 (2018) 104-120; the model is neuroHarmonize's (Pomponio et al.,
    NeuroImage 208 (2020) 116450). Features that are constant in the fitting data (e.g. dead ReLU units) carry
    no site effect and pass through unchanged.

    ComBat cannot harmonise a site it was not fitted on: the site's location and scale are estimated from that
    site's own data. For scans of a new site, either refit including some of that site's scans (with
    covariates overlapping the other sites'), or leave them unharmonised: ``unseen="passthrough"`` returns them
    unchanged (with a logged warning); ``unseen="error"`` (default) raises.

    Args:
        protected: covariates whose effects ComBat preserves (names of the ``covariates`` columns).
        eb: use empirical-Bayes estimates of the site effects (ComBat's default).
        smooth_terms: protected covariates modelled as smooth non-linear (GAM) terms instead of linearly.
        unseen: ``"error"`` or ``"passthrough"``: what :meth:`transform` does with rows of an unseen site.

    Raises:
        ConfigError: a smooth term that is not protected, or an unknown ``unseen`` choice.

    Example::

        harmonizer = ComBatHarmonizer(protected=("age",)).fit(x_train, sites_train, {"age": age_train})
        x_test_harmonised = harmonizer.transform(x_test, sites_test, {"age": age_test})
        harmonizer.save("combat.npz")  # later: ComBatHarmonizer.load("combat.npz")
    """

    def __init__(
        self,
        protected: Sequence[str] = (Keys.AGE, Keys.SEX),
        eb: bool = True,
        smooth_terms: Sequence[str] = (),
        unseen: str = UnseenSite.ERROR,
    ) -> None:
        self._configure(protected, eb, smooth_terms, unseen)
        self._sites: list[Any] | None = None
        self._n_features = 0
        self._varying: np.ndarray | None = None
        self._model: dict[str, Any] | None = None
        self._smooth_x: np.ndarray | None = None

    def _configure(self, protected: Sequence[str], eb: bool, smooth_terms: Sequence[str], unseen: str) -> None:
        problems = []
        if isinstance(protected, str) or isinstance(smooth_terms, str):
            problems.append("protected and smooth_terms must be sequences of names, e.g. ('age', 'sex')")
            protected, smooth_terms = [protected] if isinstance(protected, str) else protected, []
        self.protected = [str(p) for p in protected]
        self.smooth_terms = [str(s) for s in smooth_terms]
        if len(set(self.protected)) != len(self.protected) or _SITE_COLUMN in self.protected:
            problems.append(f"protected {self.protected} must be distinct names, and not '{_SITE_COLUMN}'")
        stray = [s for s in self.smooth_terms if s not in self.protected]
        if stray:
            problems.append(f"smooth_terms {stray} are not protected covariates {self.protected}: add them to "
                            "protected")
        self.eb = bool(eb)
        unseen_value, unseen_problem = option_value("unseen", unseen, UnseenSite)
        problems.append(unseen_problem)
        raise_problems(type(self).__name__, problems)
        self.unseen = unseen_value

    # ------------------------------------------------------------------------------------------------- state
    @property
    def is_fitted(self) -> bool:
        return self._sites is not None

    @property
    def sites(self) -> list[Any]:
        """The site labels the model was fitted on (sorted)."""
        self._check_fitted("sites")
        return list(self._sites)

    def _check_fitted(self, what: str) -> None:
        if not self.is_fitted:
            raise HarmonizeError(f"ComBatHarmonizer.{what}: the harmonizer is not fitted; call fit() first.")

    @property
    def _smooth_cols(self) -> list[int]:
        # Columns of the smooth terms in the frame given to neuroHarmonize (SITE first, then ``protected``).
        return [1 + i for i, name in enumerate(self.protected) if name in self.smooth_terms]

    def _frame(self, codes: np.ndarray, covariates: pd.DataFrame) -> pd.DataFrame:
        frame = covariates.reset_index(drop=True).copy()
        frame.insert(0, _SITE_COLUMN, np.asarray(codes, dtype=np.int64))
        return frame

    # --------------------------------------------------------------------------------------------------- fit
    def fit(self, features: np.ndarray, sites: Any, covariates: Any = None) -> ComBatHarmonizer:
        """Estimate the site effects of ``features``.

        Args:
            features: ``(n_samples, n_features)`` values to harmonise (e.g. tissue volumes or network features).
            sites: ``(n_samples,)`` site labels (ints or strings); at least 2 sites with 2 scans each.
            covariates: the protected covariates, a mapping or DataFrame of ``(n_samples,)`` numeric columns.

        Returns:
            ``self``.

        Raises:
            ConfigError: bad shapes, missing covariates, too few sites or scans, or covariates collinear with site.
        """
        self.fit_transform(features, sites, covariates)
        return self

    def fit_transform(self, features: np.ndarray, sites: Any, covariates: Any = None) -> np.ndarray:
        """Fit on ``features`` and return them harmonised (see :meth:`fit`)."""
        from neuroHarmonize import harmonizationLearn

        x = _check_features(features, "ComBat fit")
        labels = _as_site_labels(sites, len(x), "ComBat fit")
        cov = _covariate_frame(covariates, self.protected, len(x), "ComBat fit")
        known = sorted(set(labels.tolist()))
        counts = {s: int(np.sum(labels == s)) for s in known}
        if len(known) < MIN_SITES:
            raise ConfigError(f"ComBat fit: needs at least {MIN_SITES} sites, got {known}.")
        few = [f"site {s!r} has {c} scan(s)" for s, c in counts.items() if c < MIN_ROWS_PER_SITE]
        if few:
            raise ConfigError(
                f"ComBat fit: every site needs at least {MIN_ROWS_PER_SITE} scans to estimate its variance; "
                "drop or merge these sites.",
                problems=few,
            )
        codes = np.array([known.index(s) for s in labels.tolist()], dtype=np.int64)
        self._check_design(codes, len(known), cov)
        varying = np.ptp(x, axis=0) > 0
        out = x.copy()
        if not varying.any():
            raise ConfigError("ComBat fit: every feature is constant over the fitting scans; nothing to harmonise.")
        if not varying.all():
            logger.info(
                "ComBat: %d constant feature(s) carry no site effect and pass through unchanged.", int((~varying).sum())
            )
        frame = self._frame(codes, cov)
        try:
            model, harmonised = _quiet(
                harmonizationLearn,
                x[:, varying],
                frame,
                eb=self.eb,
                smooth_terms=list(self.smooth_terms),
                seed=_NEUROHARMONIZE_SEED,
            )
        except np.linalg.LinAlgError as err:
            raise ConfigError(
                f"ComBat fit: the design of sites and covariates {self.protected} is singular ({err}); "
                "a covariate is probably confounded with site. Leave it out of protected."
            ) from err
        self._check_finite(harmonised, np.flatnonzero(varying), "fit")
        out[:, varying] = harmonised
        self._sites = known
        self._n_features = x.shape[1]
        self._varying = varying
        self._model = self._slim_model(model)
        self._smooth_x = frame.iloc[:, self._smooth_cols].to_numpy(float) if self.smooth_terms else None
        logger.info(
            "ComBat fitted on %d scans of %d sites, %d features, protecting %s.",
            len(x),
            len(known),
            x.shape[1],
            self.protected,
        )
        return out

    def _check_design(self, codes: np.ndarray, n_sites: int, cov: pd.DataFrame) -> None:
        """Raise if a protected covariate cannot be told apart from the sites (ComBat's design is then singular)."""
        if cov.shape[1] == 0:
            return
        design = np.concatenate([np.eye(n_sites)[codes], cov.to_numpy(float)], axis=1)
        if np.linalg.matrix_rank(design) == design.shape[1]:
            return
        problems = []
        for name in cov.columns:
            values = cov[name].to_numpy(float)
            if np.ptp(values) == 0:
                problems.append(f"'{name}' is constant ({values[0]:g}) over all scans")
            elif all(np.ptp(values[codes == c]) == 0 for c in range(n_sites)):
                problems.append(f"'{name}' takes a single value within each site, so it is confounded with site")
        raise ConfigError(
            f"ComBat fit: the protected covariates {list(cov.columns)} are collinear with the sites (or with each "
            "other), so ComBat cannot separate site effects from them. Leave the collinear covariate out of protected.",
            problems=problems,
        )

    @staticmethod
    def _check_finite(values: np.ndarray, columns: np.ndarray, what: str) -> None:
        """Raise if neuroHarmonize returned NaN or Inf; ``columns`` are the original indices of ``values``' columns."""
        bad = np.flatnonzero(~np.isfinite(values).all(axis=0))
        if bad.size:
            raise HarmonizeError(
                f"ComBat {what} produced NaN or Inf in features {_listed(columns[bad].tolist())}: such a feature "
                "probably has zero variance within a site. Remove those features, or fit with eb=False."
            )

    @staticmethod
    def _slim_model(model: dict[str, Any]) -> dict[str, Any]:
        """The parts of a neuroHarmonize model that ``harmonizationApply`` needs (no per-scan arrays)."""
        slim = {key: np.asarray(model[key], dtype=float) for key in _MODEL_ARRAYS}
        # stand_mean repeats the grand mean once per training scan; apply reads its first column only.
        slim["stand_mean"] = slim["stand_mean"][:, :1]
        slim["SITE_labels"] = np.asarray(model["SITE_labels"], dtype=np.int64)
        slim["info_dict"] = {"ref_level": None}
        smooth_keys = ("perform_smoothing", "smooth_terms", "smooth_cols", "bsplines_constructor")
        slim["smooth_model"] = {key: model["smooth_model"][key] for key in smooth_keys}
        return slim

    # ---------------------------------------------------------------------------------------------- transform
    def transform(
        self, features: np.ndarray, sites: Any, covariates: Any = None, unseen: str | None = None
    ) -> np.ndarray:
        """Remove the fitted site effects from ``features`` (any subset of the fitted sites, in any order).

        Args:
            features: ``(n_samples, n_features)`` with the fitted number of features.
            sites: ``(n_samples,)`` site labels, as given to :meth:`fit`.
            covariates: the protected covariates of these scans.
            unseen: override of the harmonizer's ``unseen`` choice for this call.

        Returns:
            ``(n_samples, n_features)`` harmonised features (a new array).

        Raises:
            HarmonizeError: rows of a site the model was not fitted on, with ``unseen="error"``; the message names
                the unseen and the known sites. Refit including that site, or pass ``unseen="passthrough"``.
            ConfigError: bad shapes or covariates.
        """
        self._check_fitted("transform")
        policy = check_option("unseen", self.unseen if unseen is None else unseen, UnseenSite)
        x = _check_features(features, "ComBat transform")
        if x.shape[1] != self._n_features:
            raise ConfigError(
                f"ComBat transform: features have {x.shape[1]} columns, but the model was fitted on {self._n_features}."
            )
        labels = _as_site_labels(sites, len(x), "ComBat transform")
        cov = _covariate_frame(covariates, self.protected, len(x), "ComBat transform")
        is_known = np.array([s in self._sites for s in labels.tolist()], dtype=bool)
        out = x.copy()
        if not is_known.all():
            new = sorted(set(labels[~is_known].tolist()), key=str)
            if policy == UnseenSite.ERROR:
                raise HarmonizeError(
                    f"ComBat cannot harmonise site(s) {new} ({int((~is_known).sum())} rows): the model was fitted on "
                    f"sites {self._sites} only, and ComBat estimates each site's effect from that site's own data. "
                    "Refit including some scans of the new site(s), or pass unseen='passthrough' to leave their rows "
                    "unharmonised."
                )
            logger.warning(
                "ComBat: %d row(s) of site(s) %s unseen at fit time are left unharmonised (known sites: %s).",
                int((~is_known).sum()),
                new,
                self._sites,
            )
        rows = np.flatnonzero(is_known)
        self._check_smooth_range(cov.iloc[rows])
        if rows.size:
            codes = np.array([self._sites.index(s) for s in labels[rows].tolist()], dtype=np.int64)
            harmonised = self._apply(x[rows][:, self._varying], codes, cov.iloc[rows])
            out[np.ix_(rows, np.flatnonzero(self._varying))] = harmonised
        return out

    def _check_smooth_range(self, cov: pd.DataFrame) -> None:
        """Refuse smooth-term values outside the fitted range: the B-spline basis has no knots there."""
        if self._smooth_x is None:
            return
        smooth = [name for name in self.protected if name in self.smooth_terms]
        problems = []
        for j, name in enumerate(smooth):
            low, high = float(self._smooth_x[:, j].min()), float(self._smooth_x[:, j].max())
            values = cov[name].to_numpy(float)
            outside = np.flatnonzero((values < low) | (values > high))
            if outside.size:
                problems.append(
                    f"'{name}' of {outside.size} row(s) {_listed(outside.tolist())} lies outside the fitted range "
                    f"[{low:g}, {high:g}] (values {_listed(values[outside].tolist())})"
                )
        if problems:
            raise ConfigError(
                "ComBat transform: a smooth term is only defined on the range of the fitting scans; drop those rows, "
                "refit on scans that cover them, or model the covariate linearly (leave it out of smooth_terms).",
                problems=problems,
            )

    def _apply(self, x: np.ndarray, codes: np.ndarray, cov: pd.DataFrame) -> np.ndarray:
        """``harmonizationApply`` on rows of known sites, padded with one dummy row per absent site.

        neuroHarmonize 2.4.5 builds the site columns of the design matrix from the sites *present* in the new data
        (``make_design_matrix`` one-hot encodes ``np.unique`` of them), so data holding fewer sites than the model
        gives a design narrower than the model's coefficients and ``applyStandardizationAcrossFeatures`` fails
        (IndexError or a shape mismatch). Each row's harmonisation depends only on its own site, covariates and the
        fitted parameters, so one dummy row per absent site (zero features, covariates copied from a real row, to
        stay inside the spline basis' range) restores the full design and is dropped afterwards: the result equals
        applying the model to data that holds every site.
        """
        from neuroHarmonize import harmonizationApply

        absent = sorted(set(range(len(self._sites))) - set(codes.tolist()))
        frame = self._frame(codes, cov)
        if absent:
            pad = pd.DataFrame([frame.iloc[0].to_dict()] * len(absent))
            pad[_SITE_COLUMN] = absent
            frame = pd.concat([frame, pad.astype(frame.dtypes.to_dict())], ignore_index=True)
            x = np.concatenate([x, np.zeros((len(absent), x.shape[1]))])
        harmonised = np.asarray(_quiet(harmonizationApply, x, frame, self._model), dtype=float)[: len(codes)]
        self._check_finite(harmonised, np.flatnonzero(self._varying), "transform")
        return harmonised

    # ------------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Settings and fitted parameters as plain values and numpy arrays (see :meth:`load_state_dict`)."""
        self._check_fitted("state_dict")
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "protected": list(self.protected),
            "eb": self.eb,
            "smooth_terms": list(self.smooth_terms),
            "unseen": str(self.unseen),
            "sites": list(self._sites),
            "n_features": int(self._n_features),
            "varying": self._varying.copy(),
            "smooth_x": None if self._smooth_x is None else self._smooth_x.copy(),
        }
        for key in _MODEL_ARRAYS:
            state[key] = self._model[key].copy()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> ComBatHarmonizer:
        """Restore a harmonizer from :meth:`state_dict` (settings included); returns ``self``.

        Raises:
            HarmonizeError: a state of another version or with missing entries.
        """
        required = (*_SETTINGS, "sites", "n_features", "varying", *_MODEL_ARRAYS)
        missing = [k for k in required if k not in state]
        if missing:
            raise HarmonizeError(f"Not a ComBat harmonizer state: entries {missing} are missing.")
        if int(state["version"]) != STATE_VERSION:
            raise HarmonizeError(
                f"ComBat harmonizer state of version {state['version']}; this version of harmonize reads "
                f"{STATE_VERSION}."
            )
        self._configure(list(state["protected"]), bool(state["eb"]), list(state["smooth_terms"]), str(state["unseen"]))
        self._sites = list(state["sites"])
        self._n_features = int(state["n_features"])
        self._varying = np.asarray(state["varying"], dtype=bool)
        model: dict[str, Any] = {key: np.asarray(state[key], dtype=float) for key in _MODEL_ARRAYS}
        model["SITE_labels"] = np.arange(len(self._sites), dtype=np.int64)
        model["info_dict"] = {"ref_level": None}
        smooth_x = state.get("smooth_x")
        self._smooth_x = None if smooth_x is None else np.asarray(smooth_x, dtype=float)
        model["smooth_model"] = {
            "perform_smoothing": bool(self.smooth_terms),
            "smooth_terms": list(self.smooth_terms),
            "smooth_cols": self._smooth_cols,
            "bsplines_constructor": None if self._smooth_x is None else _spline_basis(self._smooth_x),
        }
        self._model = model
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted harmonizer to a ``.npz`` file (atomically; no pickled objects).

        Returns:
            The path written.
        """
        state = self.state_dict()
        path = Path(path)
        arrays = {key: state.pop(key) for key in ("varying", *_MODEL_ARRAYS)}
        smooth_x = state.pop("smooth_x")
        if smooth_x is not None:
            arrays["smooth_x"] = smooth_x
        arrays["meta"] = np.array(json.dumps(state))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a file object: given a name, np.savez would append ".npz" to it
                np.savez(handle, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ComBatHarmonizer:
        """Read a harmonizer written by :meth:`save`.

        Raises:
            HarmonizeError: the file is missing or is not a saved ComBat harmonizer.
        """
        path = Path(path)
        if not path.is_file():
            raise HarmonizeError(f"ComBat model file {str(path)!r} does not exist.")
        try:
            with np.load(path, allow_pickle=False) as data:
                state = json.loads(str(data["meta"]))
                for key in data.files:
                    if key != "meta":
                        state[key] = data[key]
        except (OSError, ValueError, KeyError) as err:
            raise HarmonizeError(f"{str(path)!r} is not a ComBat model saved by harmonize ({err}).") from err
        return cls().load_state_dict(state)


# ------------------------------------------------------------------------------------------------ feature sets
