"""forget_model / unlearn_brain_age: a trained brain-age model forgets withdrawn subjects; the report measures it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from harmonize import defaults
from harmonize.data.forget_list import forget_rows, mark_forget
from harmonize.data.manifest import read_manifest, write_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, HarmonizeError, ManifestError
from harmonize.keys import Keys
from harmonize.networks import TissueSegmenter
from harmonize.output_dir import OutputDirError
from harmonize.workflows.audit import audit_model
from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
from harmonize.workflows.forget import (
    ForgetSettings,
    ForgetTargetd,
    forget_model,
    measure_model,
    unlearn_brain_age,
)
from harmonize.workflows.model_file import load_model, save_model
from harmonize.workflows.segmentation_audit import SegmentationModel
from harmonize.workflows.unlearning import UnlearningSettings

CHANNELS = (8, 8, 8, 8)
#: Few iterations, no bootstrap beyond what an interval needs.
FAST = {"ft_epochs": 1, "forget_epochs": 1, "bootstrap": 20}


@pytest.fixture(scope="module")
def cohort(tiny_cohort, tmp_path_factory):
    """The tiny cohort's manifest with one withdrawn training subject per site (3 of 12), beside its scans."""
    frame = mark_forget(read_manifest(tiny_cohort), 0.25, seed=0)
    return write_manifest(frame, tmp_path_factory.mktemp("forget") / "manifest.csv")


@pytest.fixture(scope="module")
def model_file(tiny_cohort, tmp_path_factory):
    unlearning = UnlearningSettings(method="unlearning", warmup_epochs=1, beta=1.0)
    settings = BrainAgeSettings(unlearning=unlearning, max_epochs=3, channels=CHANNELS, feature_dim=16, batch_size=3,
                                augment=False)
    model = train_brain_age(tiny_cohort, settings)
    return save_model(model, tmp_path_factory.mktemp("model") / "unlearning.pt")


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_forget_target_transform():
    transform = ForgetTargetd({"s1"}, before=lambda d: {**d, "seen": True})
    out = transform({Keys.SUBJECT_ID: "s1", Keys.AGE: torch.tensor(42.0)})
    assert out["seen"] and bool(out[Keys.FORGET]) and out[Keys.TARGET].shape == (1,) and float(out[Keys.TARGET]) == 42
    assert not bool(transform({Keys.SUBJECT_ID: "s2", Keys.AGE: torch.tensor(1.0)})[Keys.FORGET])


def test_forget_model_writes_models_and_report(model_file, cohort, tmp_path):
    before = _digest(model_file)
    out = tmp_path / "out"
    metrics = forget_model(model_file, cohort, out, ForgetSettings(oracle=True, **FAST), methods=["ft", "ga_l1_ft"])
    assert _digest(model_file) == before  # the original is only read
    assert metrics["methods"] == ["ft", "ga_l1_ft"] and (metrics["n_forget"], metrics["n_retain"]) == (3, 9)
    models = metrics["models"]
    assert list(models) == ["original", "ft", "ga_l1_ft", "oracle"]
    for name, figures in models.items():
        assert (figures["mia_n_members"], figures["mia_n_nonmembers"]) == (3, 6)  # 6 held-out scans of 3 sites
        low, high = figures["mia_auc_ci"]
        assert 0 <= low <= figures["mia_auc"] <= high <= 1
        assert np.isfinite([figures["retain_mae"], figures["forget_mae"], figures["age_mae"]]).all()
        assert figures["chance"] == pytest.approx(1 / 3)
    assert models["ft"]["time_ratio"] == pytest.approx(models["ft"]["seconds"] / models["oracle"]["seconds"])
    assert metrics["retrain_seconds"] == models["oracle"]["seconds"] and models["original"]["seconds"] is None
    # CPU seconds beside the wall seconds, against the oracle retrained here
    assert models["original"]["cpu_seconds"] is None and models["oracle"]["cpu_seconds"] > 0
    assert models["ft"]["cpu_seconds"] > 0
    ratio = models["ft"]["cpu_seconds"] / models["oracle"]["cpu_seconds"]
    assert models["ft"]["cpu_time_ratio"] == pytest.approx(ratio)
    written = json.loads((out / "metrics.json").read_text())
    assert written["models"]["ft"]["mia_auc"] == pytest.approx(models["ft"]["mia_auc"])
    md = (out / "report.md").read_text()
    assert all(f"| {name} |" in md for name in models) and "3 of 12 training subjects withdrawn" in md
    assert "Membership-inference AUC" in (out / "report.html").read_text()
    assert {p.name for p in (out / "figures").iterdir()} == {"membership.png", "comparison.png"}
    # every model file is a harmonize model file that harmonize audit reads, with the figures measured here
    for name in ("ft", "ga_l1_ft", "oracle"):
        assert models[name]["saved"] == str(out / "models" / f"{name}.pt")
    reloaded = load_model(out / "models" / "ga_l1_ft.pt")
    original = load_model(model_file)
    moved = [k for k, v in reloaded.network.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, original.network.state_dict()[k])]
    assert moved  # the unlearned weights differ from the original's
    audited = audit_model(out / "models" / "ga_l1_ft.pt", cohort, tmp_path / "audit", permutations=0)
    assert audited["age_mae"] == pytest.approx(models["ga_l1_ft"]["age_mae"], rel=1e-4)


def test_gradient_ascent_raises_the_withdrawn_subjects_error_most(model_file, cohort):
    frame = read_manifest(cohort)
    flags = forget_rows(frame)
    original = load_model(model_file)
    settings = ForgetSettings(method="ga", forget_epochs=3, ga_learning_rate=3e-3, loss_ceiling=None, bootstrap=0)
    unlearned, watch = unlearn_brain_age(original, frame, flags, settings)
    before, _ = measure_model(original, frame, flags, settings)
    after, _ = measure_model(unlearned, frame, flags, settings)
    assert watch.wall > 0 and watch.cpu > 0 and unlearned.seconds == watch.wall
    assert after["forget_mae"] - before["forget_mae"] > 1.0  # years: ascent pushed the withdrawn subjects away
    assert torch.equal(original.network.state_dict()["age_offset"], load_model(model_file).network.age_offset)
    assert all(torch.equal(v, w) for v, w in zip(original.network.state_dict().values(),
                                                 load_model(model_file).network.state_dict().values()))


def test_a_subject_whose_loss_reached_the_ceiling_no_longer_pushes_the_ascent(model_file, cohort):
    frame = read_manifest(cohort)
    flags = forget_rows(frame)
    original = load_model(model_file)
    assert ForgetSettings().loss_ceiling == defaults.FORGET_LOSS_CEILING and ForgetSettings().method == "ga"
    # every withdrawn subject's loss is above this ceiling: the ascent has no gradient, no weight moves
    settings = ForgetSettings(method="ga", forget_epochs=3, ga_learning_rate=3e-3, loss_ceiling=1e-9, bootstrap=0)
    unlearned, _ = unlearn_brain_age(original, frame, flags, settings)
    assert all(torch.equal(p, q) for p, q in zip(unlearned.network.parameters(), original.network.parameters()))
    # without a ceiling the same stage moves them
    free, _ = unlearn_brain_age(original, frame, flags, replace(settings, loss_ceiling=None))
    assert not all(torch.equal(p, q) for p, q in zip(free.network.parameters(), original.network.parameters()))


def test_bad_forget_lists_are_refused_before_anything_is_written(model_file, tiny_cohort, tmp_path):
    frame = read_manifest(tiny_cohort)
    cases = {"none": frame.assign(**{Keys.FORGET: False}),
             "all": frame.assign(**{Keys.FORGET: frame[Keys.SPLIT] == "train"}),
             "held-out": frame.assign(**{Keys.FORGET: frame[Keys.SPLIT] == "test"})}
    messages = {"none": "no training row is marked 'forget'", "all": "nothing is left to retain",
                "held-out": "are marked 'forget' but are not 'train' rows"}
    for name, marked in cases.items():
        path = write_manifest(marked, tmp_path / f"{name}.csv")
        with pytest.raises(ManifestError, match=messages[name]):
            forget_model(model_file, path, tmp_path / f"out_{name}", ForgetSettings(**FAST))
        assert not (tmp_path / f"out_{name}").exists()


def test_the_model_file_is_never_overwritten(model_file, cohort):
    before = _digest(model_file)
    with pytest.raises(OutputDirError, match=f"holds the input {model_file}: outputs would be written among your data"):
        forget_model(model_file, cohort, model_file.parent, ForgetSettings(**FAST), overwrite=True)
    assert _digest(model_file) == before


def test_a_segmentation_model_is_refused(cohort, tmp_path):
    model = SegmentationModel(TissueSegmenter(channels=(4, 8)), CategoryIndex(["site0", "site1", "site2"]),
                              ("encoder",))
    with pytest.raises(HarmonizeError, match="forgets subjects of brain-age models"):
        forget_model(model, cohort, tmp_path / "out", ForgetSettings(**FAST))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "oracle"}, "'oracle' is not a forgetting method"),
        ({"method": "sgd"}, "sgd"),
        ({"ft_epochs": 0}, "'ft_epochs' must be an integer >= 1, got 0 (int)"),
        ({"learning_rate": 0.0}, "'learning_rate' must be a finite number > 0, got 0.0 (float)"),
        ({"batch_size": 0}, "'batch_size' must be an integer >= 1, got 0 (int); or None (the training batch size)"),
        ({"bootstrap": -1}, "'bootstrap' must be an integer >= 0, got -1 (int)"),
        ({"loss_ceiling": 0.0}, "'loss_ceiling' must be a finite number > 0 or None, got 0.0 (float)"),
    ],
)
def test_settings_errors(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        ForgetSettings(**kwargs)
    assert message in str(caught.value) + str(getattr(caught.value, "problems", ""))
