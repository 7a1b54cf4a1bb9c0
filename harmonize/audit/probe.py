"""Probes: can a simple model read a variable from a network's features?

A probe trained on held-out features is the evidence that unlearning worked: if a cross-validated logistic
regression cannot predict the scanner better than chance, the scanner information is gone (or at least not
linearly readable); if a ridge regression still predicts age, the biology is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harmonize.errors import ConfigError

__all__ = ["ClassifierProbeResult", "RegressorProbeResult", "classifier_probe", "regressor_probe"]

#: Largest number of cross-validation folds a probe uses.
MAX_FOLDS = 5


@dataclass
class ClassifierProbeResult:
    """Cross-validated balanced accuracy of a logistic-regression probe.

    Attributes:
        balanced_accuracy: mean recall over classes, from out-of-fold predictions.
        chance: the balanced accuracy of guessing, ``1 / n_classes``.
        p_value: permutation-test p-value (``None`` when no permutations were run).
        n_samples: samples probed.
        n_classes: classes present.
        folds: cross-validation folds used.
    """

    balanced_accuracy: float
    chance: float
    p_value: float | None
    n_samples: int
    n_classes: int
    folds: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RegressorProbeResult:
    """Cross-validated ridge-regression probe: R² and mean absolute error of out-of-fold predictions."""

    r2: float
    mae: float
    n_samples: int
    folds: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check_features(features: np.ndarray, n: int, what: str) -> np.ndarray:
    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or x.shape[0] != n:
        raise ConfigError(f"{what}: features must be (n_samples, n_features) with n_samples={n}, got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{what}: features contain NaN or Inf.")
    return x


def classifier_probe(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = MAX_FOLDS,
    permutations: int = 0,
    seed: int = 0,
) -> ClassifierProbeResult:
    """Predict a categorical variable (e.g. site) from features with a cross-validated logistic regression.

    The features are standardised inside each fold, the classes are weighted to be balanced, and the score is the
    balanced accuracy of out-of-fold predictions, so the chance level is ``1 / n_classes`` however unbalanced the
    classes are.

    Args:
        features: ``(n_samples, n_features)``.
        labels: ``(n_samples,)`` class labels.
        folds: stratified folds (reduced to the smallest class count when a class is rarer).
        permutations: if > 0, the number of label permutations for a p-value (sklearn's permutation test).
        seed: seed of the fold split and the permutations.

    Raises:
        ConfigError: fewer than 2 classes, or a class with a single sample.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import (
        StratifiedKFold,
        cross_val_predict,
        permutation_test_score,
    )
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    x = _check_features(features, len(y), "classifier_probe")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ConfigError(f"classifier_probe needs at least 2 classes, got {classes.tolist()}.")
    k = int(min(folds, counts.min()))
    if k < 2:
        rare = classes[counts < 2].tolist()
        raise ConfigError(f"classifier_probe: classes {rare} have a single sample; cross-validation needs at least 2.")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pred = cross_val_predict(model, x, y, cv=cv)
    bacc = float(balanced_accuracy_score(y, pred))
    p_value = None
    if permutations > 0:
        _, _, p_value = permutation_test_score(
            model, x, y, cv=cv, n_permutations=permutations, scoring="balanced_accuracy", random_state=seed
        )
        p_value = float(p_value)
    return ClassifierProbeResult(bacc, 1.0 / len(classes), p_value, len(y), len(classes), k)


def regressor_probe(features: np.ndarray, targets: np.ndarray, folds: int = MAX_FOLDS, seed: int = 0) -> RegressorProbeResult:
    """Predict a continuous variable (e.g. age) from features with a cross-validated ridge regression.

    Args:
        features: ``(n_samples, n_features)``.
        targets: ``(n_samples,)`` values; samples with a non-finite target are left out.
        folds: folds of the cross-validation.
        seed: seed of the fold split.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(targets, dtype=float)
    x = _check_features(features, len(y), "regressor_probe")
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    k = int(min(folds, len(y)))
    if k < 2:
        raise ConfigError(f"regressor_probe needs at least 2 samples with a finite target, got {len(y)}.")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(model, x, y, cv=KFold(n_splits=k, shuffle=True, random_state=seed))
    return RegressorProbeResult(float(r2_score(y, pred)), float(mean_absolute_error(y, pred)), len(y), k)
