"""Sentences the comparison report adds under its table: how many seeds, and what ComBat did with a new site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harmonize.keys import UnseenSite

__all__ = ["combat_unseen_note", "seeds_note"]


def seeds_note(seeds: Sequence[int]) -> str:
    """How many seeds the figures come from."""
    if len(seeds) == 1:
        return (f"Each method was trained on one seed ({seeds[0]}): a run on another seed, or on another CPU, can move "
                "these figures by more than the methods differ. Compare with --seeds 3 or more.")
    return (f"Each method was trained on {len(seeds)} seeds ({', '.join(map(str, seeds))}), the same for every method "
            "(ComBat on each seed's 'none' network). A figure in the table is the mean over seeds with its 95 % "
            "t-interval in brackets; metrics.json holds every seed's figures (per_seed) and, per method, the "
            "difference from 'none' and its paired t-test p-value over seeds (vs_none). Features and training "
            f"curves are the first seed's ({seeds[0]}).")


def combat_unseen_note(combat: Mapping[str, Any], held_out: str) -> str:
    """What ComBat did with the unseen site ``held_out`` (``combat``: its figures, with ``unseen_site_handling``)."""
    if combat.get("unseen_site_handling") == UnseenSite.PASSTHROUGH:
        return (f"ComBat and the unseen site: ComBat estimates each site's effect from that site's own scans, so it "
                f"cannot harmonise {held_out!r}, which it was not fitted on. Its scans were left unharmonised "
                "(passthrough): ComBat's unseen-site MAE is that of the network without unlearning. To harmonise a "
                "new site, ComBat must be refitted with some of its scans; unlearning and DANN need no refit.")
    return (f"ComBat and the unseen site: ComBat refused the unseen site {held_out!r} (no number in the table): "
            f"{combat.get('unseen_site_error')}")
