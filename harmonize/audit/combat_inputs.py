"""Checks and conversions of ComBat's inputs (private to :mod:`harmonize.audit.combat`): features, site labels and
covariates, each problem named with its rows; and the quiet call into neuroHarmonize with its spline basis."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harmonize.errors import ConfigError

logger = logging.getLogger(__name__)

#: Rows or values named at most in an error message.
MAX_LISTED = 10
#: Degrees of freedom and degree of neuroHarmonize's B-spline basis of a smooth term (``harmonizationLearn``).
_SPLINE_DF = 10
_SPLINE_DEGREE = 3


def _listed(values: Sequence[Any]) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:MAX_LISTED])
    return f"[{shown}{', ...' if len(values) > MAX_LISTED else ''}]"


def _check_features(features: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ConfigError(f"{what}: features must be a non-empty (n_samples, n_features) array, got shape {x.shape}.")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise ConfigError(
            f"{what}: features of rows {_listed(bad.tolist())} ({bad.size} rows) hold NaN or Inf; "
            "ComBat needs finite values. Drop those rows first."
        )
    return x


def _as_site_labels(sites: Any, n: int, what: str) -> np.ndarray:
    """Site labels as an array of Python ints, or of strings when any label is not an integer."""
    arr = np.asarray(sites)
    if arr.ndim != 1 or len(arr) != n:
        raise ConfigError(f"{what}: sites must be a 1-D array with one label per row ({n}), got shape {arr.shape}.")
    if arr.dtype.kind in "iub":
        return np.array(arr.astype(np.int64).tolist(), dtype=object)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and np.all(arr == np.round(arr))):
            raise ConfigError(f"{what}: sites are floats that are not whole numbers; give integer or string labels.")
        return np.array(arr.astype(np.int64).tolist(), dtype=object)
    items = arr.tolist()
    if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in items):
        return np.array([int(s) for s in items], dtype=object)
    return np.array([str(s) for s in items], dtype=object)


def _covariate_frame(covariates: Any, protected: Sequence[str], n: int, what: str) -> pd.DataFrame:
    """The protected covariates as a float frame (columns in ``protected`` order), every problem listed."""
    if not protected:
        return pd.DataFrame(index=range(n))
    if covariates is None:
        raise ConfigError(f"{what}: covariates are needed for the protected variables {list(protected)}.")
    if not isinstance(covariates, (Mapping, pd.DataFrame)):
        raise ConfigError(
            f"{what}: covariates must be a mapping or a DataFrame of columns {list(protected)}, "
            f"got {type(covariates).__name__}."
        )
    available = list(covariates.keys())
    problems, columns = [], {}
    for name in protected:
        if name not in available:
            problems.append(f"'{name}' is missing (available: {available})")
            continue
        try:
            values = np.asarray(covariates[name], dtype=float)
        except (TypeError, ValueError):
            problems.append(f"'{name}' is not numeric (encode categories as numbers, e.g. sex as 0/1)")
            continue
        if values.ndim != 1 or len(values) != n:
            problems.append(f"'{name}' has shape {values.shape}, expected ({n},)")
            continue
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            problems.append(
                f"'{name}' is missing (NaN or Inf) in rows {_listed(bad.tolist())}: drop those rows, or leave "
                f"'{name}' out of the protected covariates"
            )
            continue
        columns[name] = values
    if problems:
        raise ConfigError(f"{what}: the protected covariates cannot be used as given.", problems=problems)
    return pd.DataFrame(columns)


def _quiet(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a neuroHarmonize function, sending what it prints to the debug log (a library must not print)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
        # neuroHarmonize 2.4.5 inverts a matrix through ``np.matrix`` (fitLSModelAndFindPriors): numpy warns that
        # the class is discouraged; the result is right, and the user cannot act on the warning.
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning, message="the matrix subclass")
        result = function(*args, **kwargs)
    if buffer.getvalue().strip():
        logger.debug("neuroHarmonize: %s", buffer.getvalue().strip())
    return result


def _spline_basis(x_spline: np.ndarray) -> Any:
    """Rebuild neuroHarmonize's B-spline basis of the smooth terms from their training values.

    The basis is a deterministic function of the training values, built here with the arguments of
    ``harmonizationLearn`` (neuroHarmonize 2.4.5), so a saved model needs no pickled statsmodels object.
    """
    from statsmodels.gam.api import BSplines

    k = x_spline.shape[1]
    if k == 1:
        return BSplines(
            x_spline, df=_SPLINE_DF, degree=_SPLINE_DEGREE, knot_kwds=[{"lower_bound": None, "upper_bound": None}]
        )
    return BSplines(x_spline, df=[_SPLINE_DF] * k, degree=[_SPLINE_DEGREE] * k)
