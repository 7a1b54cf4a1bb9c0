"""Figures over seeds: the mean of each figure, its 95 % t-interval, and a paired comparison with a baseline.

A training run's figures change with its seed (initialisation, batch order, probe folds) and with the machine's
floating-point order, often by more than the methods differ. ``harmonize compare --seeds N`` therefore trains
every method on the same N seeds, and summarises each method's per-seed figures with :func:`summarise_seeds`:

- every numeric figure (``site_probe_bacc``, ``age_mae``, ...) becomes its mean over the seeds that measured it,
  and ``<key>_ci`` its 95 % confidence interval ``[low, high]``: the Student t-interval
  ``mean +- t(0.975, n - 1) * sd / sqrt(n)`` over those seeds (``None`` with fewer than two);
- a dictionary of numbers (``age_mae_per_site``, ``site_mean_signed_error``) becomes the mean of each entry;
- a yes / no that differs between seeds (``site_unlearned``) becomes the list of every seed's;
- anything else (notes, lists of names) is the first seed's;
- ``per_seed`` lists the per-seed dictionaries, each with its ``seed``.

:func:`paired_comparison` sets a method against the baseline trained on the same seeds: per figure the
difference of the means over the seeds both measured, and the paired t-test's two-sided p-value of the per-seed
differences (``None`` with fewer than two seeds, or when the differences do not vary beyond rounding). One seed
gives the same structure: ``per_seed`` with one entry, intervals and p-values ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harmonize.errors import ConfigError, number_problem

__all__ = [
    "CI_SUFFIX",
    "CONFIDENCE",
    "PER_SEED",
    "SEED",
    "mean_interval",
    "paired_comparison",
    "summarise_seeds",
]

#: Confidence level of the intervals.
CONFIDENCE = 0.95
#: Suffix of a figure's interval key: ``site_probe_bacc`` -> ``site_probe_bacc_ci``.
CI_SUFFIX = "_ci"
#: Key of the per-seed dictionaries in a summary.
PER_SEED = "per_seed"
#: Key of a per-seed dictionary's seed (not averaged).
SEED = "seed"
#: Per-seed differences that vary by less than this share of the figures' size count as constant (rounding).
DIFFERENCE_TOLERANCE = 1e-9


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` for ``None``, a non-finite number or anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


def _is_numeric(values: Sequence[Any]) -> bool:
    """Numbers (or ``None``) on every seed, a number on at least one."""
    numbers = [v for v in values if v is not None]
    return bool(numbers) and all(_number(v) is not None or (isinstance(v, float) and not math.isfinite(v))
                                 for v in numbers)


def mean_interval(values: Sequence[Any], confidence: float = CONFIDENCE) -> tuple[float | None, list[float] | None]:
    """The mean of the finite numbers among ``values`` and its Student t-interval.

    Args:
        values: one figure per seed (``None`` or non-finite where not measured: left out).
        confidence: the interval's confidence level.

    Returns:
        ``(mean, [low, high])``; the mean is ``None`` without a number, the interval with fewer than two.
    """
    from scipy import stats

    numbers = np.array([n for n in map(_number, values) if n is not None])
    if numbers.size == 0:
        return None, None
    mean = float(numbers.mean())
    if numbers.size < 2:
        return mean, None
    half = float(stats.t.ppf((1 + confidence) / 2, numbers.size - 1) * numbers.std(ddof=1) / math.sqrt(numbers.size))
    return mean, [mean - half, mean + half]


def _mean_value(values: Sequence[Any]) -> Any:
    """The mean of numbers, keeping an integer that every seed shares (e.g. a count of scans) as it is."""
    numbers = [_number(v) for v in values]
    first = values[0]
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool) and all(v == first for v in values):
        return int(first)
    return mean_interval(values)[0] if any(n is not None for n in numbers) else None


def summarise_seeds(per_seed: Sequence[Mapping[str, Any]], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """One method's figures over seeds: means, intervals and the per-seed dictionaries (see the module docstring).

    Args:
        per_seed: the method's figures on each seed, in seed order (a ``seed`` entry is kept, not averaged).
        confidence: the intervals' confidence level.

    Returns:
        The keys of the first seed's dictionary in its order (plus keys only later seeds have), each numeric one
        followed by ``<key>_ci``, then ``per_seed`` (a list of copies of the given dictionaries).

    Raises:
        ConfigError: no seed given, or a confidence outside (0, 1).
    """
    if not per_seed:
        raise ConfigError("summarise_seeds: give the figures of at least one seed.")
    if problem := number_problem("confidence", confidence, maximum=1, strict_maximum=True):
        raise ConfigError("summarise_seeds: invalid argument.", problems=[problem])
    keys = list(dict.fromkeys(k for entry in per_seed for k in entry if k != SEED))
    summary: dict[str, Any] = {}
    for key in keys:
        values = [entry.get(key) for entry in per_seed]
        if all(isinstance(v, Mapping) and (not v or _is_numeric(list(v.values()))) for v in values):
            names = list(dict.fromkeys(n for v in values for n in v))
            summary[key] = {n: mean_interval([v.get(n) for v in values], confidence)[0] for n in names}
        elif _is_numeric(values) or all(v is None for v in values):
            summary[key] = _mean_value(values)
            summary[f"{key}{CI_SUFFIX}"] = mean_interval(values, confidence)[1]
        elif all(isinstance(v, bool) for v in values) and len(set(values)) > 1:
            summary[key] = values  # a yes / no that differs between seeds: each seed's
        else:
            summary[key] = values[0]
    summary[PER_SEED] = [dict(entry) for entry in per_seed]
    return summary


def paired_comparison(
    method: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float | None]]:
    """Each numeric figure of a method against a baseline trained on the same seeds.

    Args:
        method: the method's per-seed figures, each with its ``seed``.
        baseline: the baseline's, each with its ``seed``.

    Returns:
        ``{key: {"difference": method mean - baseline mean, "p": paired t-test p-value}}`` for every top-level
        numeric figure of either (the other measuring it or not), over the seeds where both measured it;
        ``difference`` is ``None`` without such a seed, ``p`` with fewer than two or when the per-seed differences
        do not vary.

    Raises:
        ConfigError: a per-seed dictionary without its ``seed``, or a seed twice.
    """
    from scipy import stats

    by_seed = [_by_seed(entries, name) for entries, name in ((method, "method"), (baseline, "baseline"))]
    seeds = [s for s in by_seed[0] if s in by_seed[1]]
    keys = list(dict.fromkeys(k for entry in method for k in entry if k != SEED))
    result: dict[str, dict[str, float | None]] = {}
    for key in keys:
        ours = [by_seed[0][s].get(key) for s in seeds]
        theirs = [by_seed[1][s].get(key) for s in seeds]
        measured = [_is_numeric(ours), _is_numeric(theirs)]
        if not any(measured) or not all(m or all(v is None for v in side) for m, side in zip(measured, (ours, theirs))):
            continue
        pairs = [(a, b) for a, b in zip(map(_number, ours), map(_number, theirs)) if a is not None and b is not None]
        differences = np.array([a - b for a, b in pairs])
        p = None
        scale = max([1.0, *(abs(v) for pair in pairs for v in pair)])
        if differences.size >= 2 and np.ptp(differences) > DIFFERENCE_TOLERANCE * scale:
            p = float(stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue)
        result[key] = {"difference": float(differences.mean()) if differences.size else None, "p": p}
    return result


def _by_seed(entries: Sequence[Mapping[str, Any]], name: str) -> dict[Any, Mapping[str, Any]]:
    """``{seed: figures}`` of per-seed dictionaries."""
    found: dict[Any, Mapping[str, Any]] = {}
    for i, entry in enumerate(entries):
        if SEED not in entry:
            raise ConfigError(f"paired_comparison: the {name}'s figures of entry {i} have no '{SEED}' to pair them by.")
        if entry[SEED] in found:
            raise ConfigError(f"paired_comparison: the {name} has seed {entry[SEED]} twice; give each seed once.")
        found[entry[SEED]] = entry
    return found
