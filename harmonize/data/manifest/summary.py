"""What a manifest holds: scans per site and split, each site's age range, and the range every site covers."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from harmonize.data.manifest.schema import CONFOUNDS_ATTR
from harmonize.keys import Keys, Split

__all__ = ["ManifestSummary", "overlap_range", "summarize"]


def overlap_range(frame: pd.DataFrame, key: str = Keys.AGE, by: str = Keys.SITE) -> tuple[float, float] | None:
    """Return the range of ``key`` that every group of ``by`` covers (Dinsdale et al.'s biased-data overlap).

    The overlap is [max of the per-group minima, min of the per-group maxima]. Missing values are ignored.

    Args:
        frame: a manifest frame.
        key: the continuous column (default age).
        by: the grouping column (default site).

    Returns:
        ``(low, high)``, or None when the frame is empty or the ranges do not overlap.
    """
    values = frame[[by, key]].dropna()
    if values.empty:
        return None
    groups = values.groupby(by, observed=True)[key]
    low, high = float(groups.min().max()), float(groups.max().min())
    return (low, high) if low <= high else None


@dataclass(frozen=True)
class ManifestSummary:
    """What a manifest holds.

    Attributes:
        n_scans: number of rows.
        counts: ``{site: {split: number of scans}}`` (every split listed, zero included).
        age_ranges: ``{site: (min age, max age)}``.
        overlap: the age range all sites share, or None.
        n_labelled: rows with a label.
        n_forget: rows marked ``forget``.
        confounds: ``{column: kind}`` of the declared confounds.
    """

    n_scans: int
    counts: dict[str, dict[str, int]]
    age_ranges: dict[str, tuple[float, float]]
    overlap: tuple[float, float] | None
    n_labelled: int = 0
    n_forget: int = 0
    confounds: dict[str, str] = field(default_factory=dict)

    @property
    def sites(self) -> list[str]:
        """The sites, sorted."""
        return list(self.counts)

    def format(self) -> str:
        """The summary as a small text table."""
        splits = [s.value for s in Split]
        lines = [(f"{self.n_scans} scans, {len(self.counts)} site(s), {self.n_labelled} with a label, "
                  f"{self.n_forget} marked forget")]
        width = max([len("site"), len("all"), *(len(s) for s in self.counts)])
        head = f"  {'site':<{width}} " + " ".join(f"{s:>5}" for s in splits) + f" {'total':>6}  age range"
        lines.append(head)
        for site, per_split in self.counts.items():
            ages = self.age_ranges.get(site)
            age = f"{ages[0]:.1f}-{ages[1]:.1f}" if ages else "-"
            lines.append(f"  {site:<{width}} " + " ".join(f"{per_split[s]:>5}" for s in splits)
                         + f" {sum(per_split.values()):>6}  {age}")
        totals = {s: sum(c[s] for c in self.counts.values()) for s in splits}
        lines.append(f"  {'all':<{width}} " + " ".join(f"{totals[s]:>5}" for s in splits) + f" {self.n_scans:>6}")
        overlap = f"{self.overlap[0]:.1f}-{self.overlap[1]:.1f}" if self.overlap else "none"
        lines.append(f"age range shared by all sites: {overlap}")
        if self.confounds:
            lines.append("confounds: " + ", ".join(f"{k} ({v})" for k, v in self.confounds.items()))
        return "\n".join(lines)


def summarize(frame: pd.DataFrame) -> ManifestSummary:
    """Summarise a manifest frame: scans per site and split, age range per site, the shared age range.

    Args:
        frame: as returned by :func:`~harmonize.data.manifest.reader.read_manifest` (rows with a missing site or
            split are left out of the per-site counts).

    Returns:
        The summary.
    """
    counts: dict[str, dict[str, int]] = {}
    age_ranges: dict[str, tuple[float, float]] = {}
    if Keys.SITE in frame:
        for site in sorted(frame[Keys.SITE].dropna().unique(), key=str):
            rows = frame[frame[Keys.SITE] == site]
            split_col = rows[Keys.SPLIT] if Keys.SPLIT in rows else pd.Series(dtype=object)
            counts[str(site)] = {s.value: int((split_col == s.value).sum()) for s in Split}
            if Keys.AGE in rows and rows[Keys.AGE].notna().any():
                age_ranges[str(site)] = (float(rows[Keys.AGE].min()), float(rows[Keys.AGE].max()))
    overlap = overlap_range(frame) if {Keys.SITE, Keys.AGE} <= set(frame.columns) else None
    n_labelled = int(frame[Keys.LABEL].notna().sum()) if Keys.LABEL in frame else 0
    n_forget = int(frame[Keys.FORGET].sum()) if Keys.FORGET in frame else 0
    kinds = {k: str(v) for k, v in frame.attrs.get(CONFOUNDS_ATTR, {}).items()}
    return ManifestSummary(len(frame), counts, age_ranges, overlap, n_labelled, n_forget, kinds)

