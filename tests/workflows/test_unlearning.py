"""build_unlearning_handler: settings + training rows -> a configured handler (or a clear error)."""

from __future__ import annotations

import pytest
import torch

from harmonize.data.manifest import read_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError
from harmonize.handlers import (
    AlternatingConfusion,
    ConfusionObjective,
    GradientReversalObjective,
    HeadSteps,
    LabelRangeMask,
    RefitHeads,
    SharedRangeMask,
)
from harmonize.keys import ConfoundKind, Keys, Method, Split, UnlearningMode
from harmonize.networks import BrainAgeRegressor
from harmonize.workflows.unlearning import UnlearningSettings, build_unlearning_handler


@pytest.fixture(scope="module")
def frame(tiny_cohort):
    return read_manifest(tiny_cohort)


@pytest.fixture(scope="module")
def sites(frame):
    return CategoryIndex.from_frame(frame)


def _build(frame, sites, **kwargs):
    net = BrainAgeRegressor(channels=(8, 8, 8, 8))
    return build_unlearning_handler(net, "encoder", net.feature_dim, UnlearningSettings(**kwargs), frame, sites)


def test_none_builds_no_handler(frame, sites):
    assert _build(frame, sites, method="none") is None


def test_site_sex_age_confounds(frame, sites):
    handler = _build(frame, sites, confounds=["site", "sex", "age"], betas={"sex": 2.0}, age_bins=3)
    by_name = {c.name: c for c in handler.confounds}
    assert by_name["site"].num_classes == len(sites) == 3
    assert by_name["sex"].num_classes == 2 and by_name["sex"].beta == 2.0
    assert by_name["site"].beta == 10.0
    age = by_name["age"]
    assert age.kind == ConfoundKind.CONTINUOUS and age.num_classes == 3 and len(age.bin_edges) == 2
    train_ages = frame[frame[Keys.SPLIT] == Split.TRAIN][Keys.AGE]
    assert train_ages.min() < age.bin_edges[0] < age.bin_edges[1] < train_ages.max()


def test_recipes_pick_their_objective_and_adversary(frame, sites):
    dann = _build(frame, sites, **UnlearningSettings.dann(reversal_weight=0.5).to_dict())
    assert isinstance(dann.objective, GradientReversalObjective) and dann.objective.reversal_weight == 0.5
    assert type(dann.adversary) is HeadSteps and dann.confounds[0].beta == 1.0
    assert isinstance(_build(frame, sites, mode="alternating").objective, AlternatingConfusion)
    paper = _build(frame, sites, **UnlearningSettings.paper(head_steps=3).to_dict())
    assert type(paper.objective) is ConfusionObjective and paper.adversary.config() == {"lr": 1e-3, "steps": 3}
    refit = _build(frame, sites, beta=0.0, head_refit_steps=50, head_refit_lr=5e-3)
    assert isinstance(refit.adversary, RefitHeads) and (refit.adversary.refit_steps, refit.adversary.refit_lr) == (50, 5e-3)


def test_what_carries_over_to_another_recipe():
    chosen = UnlearningSettings.refit_adversary(confounds=("site", "sex"), overlap_only=True, overlap_mode="pairs")
    dann = UnlearningSettings.dann(**chosen.what())
    assert (dann.confounds, dann.overlap_only, dann.overlap_mode) == (("site", "sex"), True, "pairs")
    assert dann.head_refit_steps == 0 and dann.head_hidden == UnlearningSettings().head_hidden


def test_refit_adversary_recipe(frame, sites):
    settings = UnlearningSettings.refit_adversary(warmup_epochs=3)
    assert (settings.beta, settings.head_hidden, settings.head_lr, settings.head_refit_steps) == (1.0, (), 1e-4, 300)
    assert settings.warmup_epochs == 3 and settings.method == "unlearning"
    handler = _build(frame, sites, **settings.to_dict())
    assert handler.adversary.refit_steps == 300 and handler.warmup.epochs == 3
    assert handler.gate.config() == {"margin": 0.05, "covariates": ["age", "sex"]}  # unlearns only what is carried
    assert _build(frame, sites, **UnlearningSettings.paper().to_dict()).gate is None  # the paper always unlearns
    head = handler.confounds[0].head
    assert [type(m).__name__ for m in head.layers] == ["BatchNorm1d", "Linear"]  # standardised input, linear head


def test_overlap_only_uses_the_training_overlap(tiny_cohort_biased):
    frame = read_manifest(tiny_cohort_biased)
    frame = frame[frame[Keys.SITE].isin(["site0", "site1"])]  # adjacent sites share half their age window
    handler = _build(frame, CategoryIndex.from_frame(frame), overlap_only=True)
    mask = handler.sample_mask
    assert isinstance(mask, LabelRangeMask)
    train = frame[frame[Keys.SPLIT] == Split.TRAIN]
    lows = train.groupby(Keys.SITE)[Keys.AGE].min()
    highs = train.groupby(Keys.SITE)[Keys.AGE].max()
    assert mask.low == pytest.approx(lows.max()) and mask.high == pytest.approx(highs.min())


def test_empty_overlap_is_refused(frame, sites, tiny_cohort_biased):
    with pytest.raises(ConfigError, match="empty"):
        _build(frame, sites, overlap_only=True, overlap_range=(60.0, 40.0))
    biased = read_manifest(tiny_cohort_biased)  # three sites whose first and last share no ages
    with pytest.raises(ConfigError, match="share no 'age' range.*overlap_mode 'pairs'"):
        _build(biased, CategoryIndex.from_frame(biased), overlap_only=True)


def test_pairs_overlap_unlearns_on_the_ages_each_site_shares_with_another(tiny_cohort_biased):
    biased = read_manifest(tiny_cohort_biased)  # site0 and site2 share no ages; each shares some with site1
    sites = CategoryIndex.from_frame(biased)
    mask = _build(biased, sites, overlap_only=True, overlap_mode="pairs").sample_mask
    assert isinstance(mask, SharedRangeMask)
    train = biased[biased[Keys.SPLIT] == Split.TRAIN]
    extent = train.groupby(Keys.SITE)[Keys.AGE].agg(["min", "max"])
    first_second = (max(extent.loc["site0", "min"], extent.loc["site1", "min"]),
                    min(extent.loc["site0", "max"], extent.loc["site1", "max"]))
    assert mask.ranges[sites["site0"]] == [pytest.approx(first_second)]
    kept = mask({Keys.AGE: torch.tensor(train[Keys.AGE].to_numpy()),
                 Keys.SITE: torch.tensor([sites[s] for s in train[Keys.SITE]])})
    shared_with_another = [any(lo <= age <= hi for other, (lo, hi) in extent.iterrows() if other != site)
                           for site, age in zip(train[Keys.SITE], train[Keys.AGE])]
    assert kept.tolist() == shared_with_another and 0 < sum(shared_with_another) < len(train)


def test_shared_range_mask_computes_pairwise_intersections_and_checks_them():
    ranges = SharedRangeMask.shared_ranges({0: (20.0, 50.0), 1: (40.0, 70.0), 2: (60.0, 90.0)})
    assert ranges == {0: [(40.0, 50.0)], 1: [(40.0, 50.0), (60.0, 70.0)], 2: [(60.0, 70.0)]}
    mask = SharedRangeMask(ranges)
    batch = {Keys.AGE: torch.tensor([45.0, 55.0, 65.0, 45.0]), Keys.SITE: torch.tensor([0, 1, 2, 2])}
    assert mask(batch).tolist() == [True, False, True, False]
    with pytest.raises(ConfigError, match="no site shares a 'age' range"):
        SharedRangeMask({0: [], 1: []})
    with pytest.raises(ConfigError, match=r"site 0: \(5.0, 1.0\)"):
        SharedRangeMask({0: [(5.0, 1.0)]})
    with pytest.raises(KeyError, match="no key"):
        mask({Keys.AGE: torch.tensor([1.0])})


def test_single_site_is_refused(frame):
    one = CategoryIndex(["site0"])
    with pytest.raises(ConfigError, match="single site.*nothing|no scanner information"):
        _build(frame, one)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "combat"}, "harmonises features after training"),
        ({"method": "unlearn"}, "did you mean"),
        ({"confounds": ["site", "handedness"]}, "Cannot unlearn 'handedness'"),
        ({"betas": {"sex": 1.0}}, "not among the confounds"),
        ({"beta": -1.0}, r"'beta' must be a finite number >= 0, got -1.0 \(float\)"),
        ({"head_refit_steps": -2}, r"'head_refit_steps' must be an integer >= 0, got -2 \(int\)"),
        ({"head_steps": "two"}, r"'head_steps' must be an integer >= 1, got 'two' \(str\)"),
        ({"head_lr": 0}, r"'head_lr' must be a finite number > 0, got 0 \(int\)"),
        ({"evidence_margin": 1.0}, r"'evidence_margin' must be a finite number >= 0 and < 1, got 1.0"),
        ({"method": "dann", "mode": "alternating"}, "method 'dann' has no mode"),
        ({"method": "dann", "head_refit_steps": 5}, "a re-fit would reset the heads"),
        ({"method": "dann", "beta": 3.0}, "set its strength with reversal_weight"),
        ({"moment_weight": 1.0}, "unexpected keyword argument 'moment_weight'"),
    ],
)
def test_bad_settings_are_named(frame, sites, kwargs, message):
    with pytest.raises((ConfigError, TypeError), match=message):
        _build(frame, sites, **kwargs)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as err:
        UnlearningSettings(beta=-1.0, head_lr=0.0, warmup_epochs=-1)
    assert len(err.value.problems) == 3


def test_every_bad_choice_is_listed_with_the_other_problems():
    with pytest.raises(ConfigError) as err:
        UnlearningSettings(method="unlearn", mode="fusd", overlap_mode="none_such", head_steps=0)
    assert [p.split(":")[0] for p in err.value.problems[:3]] == ["Argument 'method'", "Argument 'mode'",
                                                                 "Argument 'overlap_mode'"]
    assert "did you mean 'fused'" in err.value.problems[1]
    assert err.value.problems[3] == "'head_steps' must be an integer >= 1, got 0 (int)"


def test_choices_are_normalised():
    settings = UnlearningSettings(method=Method.DANN, mode=UnlearningMode.FUSED, reversal_weight=0.1)
    assert (type(settings.method), settings.method, settings.mode) == (str, "dann", "fused")
