"""The one sentence a comparison report opens with: what the numbers over seeds support, and what they do not.

:func:`comparison_verdict` reads the summaries of :func:`~harmonize.audit.seed_summary.summarise_seeds` (means,
intervals, ``per_seed``) and the paired comparison with the baseline (``vs_none``) that ``harmonize compare``
writes. It claims that a method changed the site probe only when the paired t-test over seeds gives
p < :data:`ALPHA`; with one seed, or a larger p, it says plainly that the numbers do not support a difference. Where
the audit knew the scans' ages it speaks of the probe given the features and age & sex (``site_probe_conditional``,
set against the floor of age & sex alone): what the features tell of the site beyond biology.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harmonize.audit.seed_summary import CI_SUFFIX, PER_SEED

__all__ = ["ALPHA", "BASELINE", "PREFERRED", "comparison_verdict", "format_p", "with_interval"]

#: Paired p-value below which the verdict calls a difference supported.
ALPHA = 0.05
#: The method every other is set against.
BASELINE = "none"
#: The method the verdict speaks of when present (the project's claim); else the first other method.
PREFERRED = "unlearning"
#: Key of a method's paired comparison with the baseline.
PAIRED = f"vs_{BASELINE}"
#: A p-value below this is shown as ``< P_FLOOR``.
P_FLOOR = 0.001
#: The site probe given the features and age & sex, and the same probe given age & sex alone.
CONDITIONAL, FLOOR = "site_probe_conditional", "site_probe_floor"
#: Seeds to suggest when the numbers cannot support a difference.
SUGGESTED_SEEDS = 3


def with_interval(value: Any, interval: Sequence[float] | None, digits: int | str, missing: str = "n/a") -> str:
    """``"0.33 [0.31, 0.35]"``: a value with its interval (just the value without one; ``missing`` without a value).

    Args:
        value: the figure (a mean over seeds), or None.
        interval: its ``(low, high)`` confidence interval, or None.
        digits: decimals of the three numbers, or a format spec for them (``"+.2f"``).
        missing: the text without a value.
    """
    if value is None:
        return missing
    spec = f".{digits}f" if isinstance(digits, int) else digits
    text = format(float(value), spec)
    if interval is None or len(interval) != 2 or any(v is None for v in interval):
        return text
    return f"{text} [{format(float(interval[0]), spec)}, {format(float(interval[1]), spec)}]"


def format_p(p: float | None) -> str:
    """A p-value as text: ``p = 0.012``, ``p < 0.001`` or ``p n/a``."""
    if p is None:
        return "p n/a"
    return f"p < {P_FLOOR}" if p < P_FLOOR else f"p = {p:.3f}"


def _figure(metrics: Mapping[str, Any], key: str, digits: int = 2) -> str:
    return with_interval(metrics.get(key), metrics.get(f"{key}{CI_SUFFIX}"), digits)


def comparison_verdict(methods: Mapping[str, Mapping[str, Any]], method: str | None = None,
                       alpha: float = ALPHA) -> str:
    """One sentence on whether ``method`` changed the site probe against the baseline, at what cost in age error.

    Args:
        methods: summaries by method (``site_probe_bacc``, ``age_mae``, their ``_ci``, ``per_seed`` and, but for the
            baseline, ``vs_none``), as ``harmonize compare`` writes them to ``metrics.json``.
        method: the method to speak of (default: ``unlearning`` if compared, else the first other than ``none``).
        alpha: the paired p-value below which a difference counts as supported.

    Returns:
        The sentence.
    """
    if BASELINE not in methods:
        return (f"No network was trained without harmonisation ('{BASELINE}'), so these numbers cannot say whether "
                f"any method changed anything; add '{BASELINE}' to the methods.")
    others = [m for m in methods if m != BASELINE]
    if not others:
        return f"Only the baseline ('{BASELINE}') was trained: there is no method to compare it with."
    method = method if method in others else (PREFERRED if PREFERRED in others else others[0])
    ours, base = methods[method], methods[BASELINE]
    seeds = len(ours.get(PER_SEED) or [None])
    key, name = "site_probe_bacc", "site probe"
    if all(m.get(k) is not None for m in (ours, base) for k in (CONDITIONAL, FLOOR)):
        key, name = CONDITIONAL, f"site probe given age & sex (age & sex alone: {base[FLOOR]:.2f})"
    probe = ours.get(PAIRED, {}).get(key, {})
    mae = ours.get(PAIRED, {}).get("age_mae", {})
    ratio = ""
    if ours.get("age_mae") is not None and base.get("age_mae"):
        ratio = f"{ours['age_mae'] / base['age_mae']:.2f}x the baseline's"
    probes = f"{_figure(base, key)} without harmonisation, {_figure(ours, key)} with {method}"
    p = probe.get("p")
    mae_text = f"{ratio} (paired {format_p(mae.get('p'))})" if ratio else "not measured"
    if seeds < 2:
        cost = f", age MAE {ratio}" if ratio else ""
        sentence = (f"One seed per method: these numbers cannot support a difference between {method} and the "
                    f"baseline ({name} {probes}{cost}); run with --seeds {SUGGESTED_SEEDS} or more.")
    elif p is not None and p < alpha and probe.get("difference"):
        verb = "lowered" if probe["difference"] < 0 else "raised"
        sentence = (f"{method.capitalize()} {verb} the {name} from {_figure(base, key)} to {_figure(ours, key)} "
                    f"(paired {format_p(p)} over {seeds} seeds) at an age MAE of {mae_text}.")
    else:
        sentence = (f"Over {seeds} seeds the numbers do not support a difference in the {name} between {method} and "
                    f"the baseline ({probes}; paired {format_p(p)}); {method}'s age MAE is {mae_text}.")
    return sentence + _gate_note(ours, seeds)


def _gate_note(metrics: Mapping[str, Any], seeds: int) -> str:
    """What the evidence gate did, where it left a network to plain training (``site_unlearned`` false)."""
    off = [entry.get("seed", i) for i, entry in enumerate(metrics.get(PER_SEED) or [metrics])
           if entry.get("site_unlearned") is False]
    if not off:
        return ""
    return (f" On {len(off)} of {seeds} seeds ({', '.join(map(str, off))}) the site was not unlearned: after the "
            "warm-up the training features told it less than the evidence margin beyond age and sex, so the network "
            "is the baseline's (the evidence gate).")
