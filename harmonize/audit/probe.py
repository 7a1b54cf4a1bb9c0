"""Probes: can a simple model read a variable from a network's features?

A probe trained on held-out features is the evidence that unlearning worked: if a cross-validated logistic
regression cannot predict the scanner better than chance, the scanner information is gone (or at least not
linearly readable); if a ridge regression still predicts age, the biology is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from harmonize import defaults
from harmonize.errors import ConfigError, integer_problem

__all__ = ["ClassifierProbeResult", "RegressorProbeResult", "classifier_probe", "regressor_probe"]

#: Largest number of cross-validation folds a probe uses.
MAX_FOLDS = 5
#: Cross-validations, each with its own random split into folds, whose scores a probe averages: one split's score
#: moves with the split alone (by how much: docs/audit.md, ``site_probe_bacc``); the mean of five moves less.
REPEATS = 5


@dataclass
class ClassifierProbeResult:
    """Cross-validated balanced accuracy of a logistic-regression probe.

    Attributes:
        balanced_accuracy: mean recall over classes of out-of-fold predictions, averaged over the repeats.
        chance: the balanced accuracy of guessing, ``1 / n_classes``.
        p_value: permutation-test p-value (``None`` when no permutations were run).
        n_samples: samples probed.
        n_classes: classes present.
        folds: cross-validation folds used.
        repeats: cross-validations (random splits into folds) averaged.
    """

    balanced_accuracy: float
    chance: float
    p_value: float | None
    n_samples: int
    n_classes: int
    folds: int
    repeats: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RegressorProbeResult:
    """Cross-validated ridge-regression probe: R² and mean absolute error of out-of-fold predictions (averaged over
    the repeats)."""

    r2: float
    mae: float
    n_samples: int
    folds: int
    repeats: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _check_features(features: np.ndarray, n: int, what: str) -> np.ndarray:
    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or x.shape[0] != n:
        raise ConfigError(f"{what}: features must be (n_samples, n_features) with n_samples={n}, got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{what}: features contain NaN or Inf.")
    return x


def _repeated_scores(model, x: np.ndarray, y: np.ndarray, splitter, k: int, repeats: int, seed: int,
                     scores) -> list[float]:
    """Mean of each score over ``repeats`` cross-validations whose folds are split with seeds ``seed, seed + 1, ...``."""
    from sklearn.model_selection import cross_val_predict

    if problem := integer_problem("repeats", repeats):
        raise ConfigError(f"A probe: {problem}.")
    totals = np.zeros(len(scores))
    for r in range(repeats):
        pred = cross_val_predict(model, x, y, cv=splitter(n_splits=k, shuffle=True, random_state=seed + r))
        totals += [score(y, pred) for score in scores]
    return [float(t / repeats) for t in totals]


def classifier_probe(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = MAX_FOLDS,
    permutations: int = 0,
    seed: int = 0,
    repeats: int = REPEATS,
) -> ClassifierProbeResult:
    """Predict a categorical variable (e.g. site) from features with a cross-validated logistic regression.

    The features are standardised inside each fold, the classes are weighted to be balanced, and the score is the
    balanced accuracy of out-of-fold predictions, so the chance level is ``1 / n_classes`` however unbalanced the
    classes are.

    Args:
        features: ``(n_samples, n_features)``.
        labels: ``(n_samples,)`` class labels.
        folds: stratified folds (reduced to the smallest class count when a class is rarer).
        permutations: if > 0, the number of label permutations for a p-value (sklearn's permutation test, on the
            first repeat's folds).
        seed: seed of the first repeat's fold split and of the permutations.
        repeats: cross-validations with different random folds whose balanced accuracies are averaged.

    Raises:
        ConfigError: fewer than 2 classes, or a class with a single sample.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, permutation_test_score
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
    (bacc,) = _repeated_scores(model, x, y, StratifiedKFold, k, repeats, seed, [balanced_accuracy_score])
    p_value = None
    if permutations > 0:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        _, _, p_value = permutation_test_score(
            model, x, y, cv=cv, n_permutations=permutations, scoring="balanced_accuracy", random_state=seed
        )
        p_value = float(p_value)
    return ClassifierProbeResult(bacc, 1.0 / len(classes), p_value, len(y), len(classes), k, repeats)


def regressor_probe(features: np.ndarray, targets: np.ndarray, folds: int = MAX_FOLDS, seed: int = 0,
                    repeats: int = REPEATS) -> RegressorProbeResult:
    """Predict a continuous variable (e.g. age) from features with a cross-validated ridge regression.

    Args:
        features: ``(n_samples, n_features)``.
        targets: ``(n_samples,)`` values; samples with a non-finite target are left out.
        folds: folds of the cross-validation.
        seed: seed of the first repeat's fold split.
        repeats: cross-validations with different random folds whose scores are averaged.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(targets, dtype=float)
    x = _check_features(features, len(y), "regressor_probe")
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    k = int(min(folds, len(y)))
    if k < 2:
        raise ConfigError(f"regressor_probe needs at least 2 samples with a finite target, got {len(y)}.")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=defaults.RIDGE_ALPHAS))
    r2, mae = _repeated_scores(model, x, y, KFold, k, repeats, seed, [r2_score, mean_absolute_error])
    return RegressorProbeResult(r2, mae, len(y), k, repeats)
