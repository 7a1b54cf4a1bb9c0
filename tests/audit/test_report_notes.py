"""The comparison report's sentences on seeds and on ComBat with an unseen site."""

from __future__ import annotations

from harmonize.audit.report_notes import combat_unseen_note, seeds_note


def test_seeds_note_says_one_seed_is_not_evidence_and_names_several():
    assert "one seed (4)" in seeds_note([4]) and "--seeds 3" in seeds_note([4])
    several = seeds_note([0, 1, 2])
    assert "3 seeds (0, 1, 2)" in several and "paired t-test" in several and "first seed's (0)" in several


def test_combat_note_says_passthrough_or_names_the_refusal():
    assert "left unharmonised (passthrough)" in combat_unseen_note({"unseen_site_handling": "passthrough"}, "siteE")
    refused = combat_unseen_note({"unseen_site_handling": "error", "unseen_site_error": "no batch"}, "siteE")
    assert refused == "ComBat and the unseen site: ComBat refused the unseen site 'siteE' (no number in the table): no batch"
