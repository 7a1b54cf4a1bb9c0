"""Regression pins: short runs of every kept recipe give the figures recorded before the handler's redesign (#18).

``unlearning_pins.json`` holds each run's per-epoch history (task, domain, confusion losses, head and re-fit
accuracies) and the sums of the network's and the heads' absolute weights, recorded at commit 0e242bc (before the
redesign) on the tiny cohorts. Same seeds must give the same figures: the redesign moved code, not arithmetic.
A machine with another CPU may order floating-point sums differently; regenerate the pins from 0e242bc there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
from harmonize.workflows.unlearning import UnlearningSettings

PINS = json.loads((Path(__file__).parent / "unlearning_pins.json").read_text())
CHANNELS = (8, 8, 8, 8)
RTOL = 1e-5


def _settings(unlearning: UnlearningSettings, **kwargs) -> BrainAgeSettings:
    # the output layer's re-fit and the default taps (defaults.AGE_TAPS) came later than the pins: they pin the
    # training itself, on the feature vector unless a run names its taps
    kwargs.setdefault("taps", ("encoder",))
    return BrainAgeSettings(unlearning=unlearning, max_epochs=3, channels=CHANNELS, feature_dim=16, batch_size=6,
                            refit_output=False, **kwargs)


#: name -> (cohort, settings): the re-fit recipe (two confounds, two taps; biased with pairwise overlap and half the
#: ages labelled), DANN (plain; on an overlap range with a continuous confound), the paper's fused and alternating loops.
RUNS = {
    "refit": ("plain", lambda: _settings(
        UnlearningSettings.refit_adversary(warmup_epochs=1, head_refit_steps=20, confounds=("site", "sex")),
        taps=("encoder.block3", "encoder"))),
    "refit_biased": ("biased", lambda: _settings(
        UnlearningSettings.refit_adversary(warmup_epochs=1, head_refit_steps=20, overlap_only=True,
                                           overlap_mode="pairs"), labelled_fraction=0.5)),
    "dann": ("plain", lambda: _settings(UnlearningSettings.dann(reversal_weight=1.0, warmup_epochs=1))),
    "dann_overlap": ("plain", lambda: _settings(UnlearningSettings.dann(
        reversal_weight=1.0, warmup_epochs=1, overlap_only=True, overlap_range=(40.0, 72.0),
        confounds=("site", "age")))),
    "paper": ("plain", lambda: _settings(UnlearningSettings.paper(beta=1.0, warmup_epochs=1, head_steps=2))),
    "alternating": ("plain", lambda: _settings(
        UnlearningSettings.paper(beta=1.0, warmup_epochs=1, mode="alternating"))),
}


def _weight_sum(parameters) -> float:
    return float(sum(p.detach().double().abs().sum() for p in parameters))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_recipe_gives_the_pinned_figures(name, tiny_cohort, tiny_cohort_biased):
    cohort, settings = RUNS[name]
    model = train_brain_age(tiny_cohort if cohort == "plain" else tiny_cohort_biased, settings())
    pinned = PINS[name]
    assert len(model.history) == len(pinned["history"])
    for got, want in zip(model.history, pinned["history"]):
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=RTOL, abs=1e-7), key
    assert _weight_sum(model.network.parameters()) == pytest.approx(pinned["param_sum"], rel=RTOL)
    assert _weight_sum(model.handler.heads.parameters()) == pytest.approx(pinned["head_sum"], rel=RTOL)
