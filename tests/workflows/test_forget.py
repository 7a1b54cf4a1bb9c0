"""forget_model: a trained brain-age or segmentation model forgets withdrawn subjects; the report measures it."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from harmonize.data.manifest import read_manifest, write_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, HarmonizeError, ManifestError
from harmonize.keys import Keys
from harmonize.networks import TissueSegmenter
from harmonize.output_dir import OutputDirError
from harmonize.workflows.audit import audit_model
from harmonize.workflows.bundle_model import load_bundle_model
from harmonize.workflows.forget import ForgetSettings, forget_model
from harmonize.workflows.model_file import load_model
from harmonize.workflows.segmentation_audit import SegmentationModel

from .conftest import SEGMENTER_CHANNELS

#: Few iterations, no bootstrap beyond what an interval needs.
FAST = {"ft_epochs": 1, "forget_epochs": 1, "bootstrap": 20}


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["brain_age", "segmentation"])
def trained(request, brain_age_model_file, segmentation_bundle):
    """``(model path, the file that holds its weights)`` of each task."""
    if request.param == "brain_age":
        return brain_age_model_file, brain_age_model_file
    return segmentation_bundle, segmentation_bundle / "models" / "model.pt"


def test_forget_model_writes_models_and_report(brain_age_model_file, forget_cohort, tmp_path):
    model_file, cohort = brain_age_model_file, forget_cohort
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


def test_forget_a_segmentation_bundle(segmentation_bundle, forget_cohort, tmp_path):
    weights = segmentation_bundle / "models" / "model.pt"
    before = _digest(weights)
    out = tmp_path / "out"
    settings = ForgetSettings(oracle=True, oracle_epochs=1, ga_learning_rate=1e-3, **FAST)
    metrics = forget_model(segmentation_bundle, forget_cohort, out, settings, methods=["ga", "ga_l1_ft"])
    assert _digest(weights) == before  # the original is only read
    assert (metrics["n_forget"], metrics["n_retain"]) == (3, 9) and metrics["model"] == str(segmentation_bundle)
    models = metrics["models"]
    assert list(models) == ["original", "ga", "ga_l1_ft", "oracle"]
    for name, figures in models.items():
        assert (figures["mia_n_members"], figures["mia_n_nonmembers"]) == (3, 6)
        low, high = figures["mia_auc_ci"]
        assert 0 <= low <= figures["mia_auc"] <= high <= 1
        for key in ("retain_dice", "forget_dice", "mean_dice"):
            assert 0 <= figures[key] <= 1, (name, key)
        assert "age_mae" not in figures and figures["chance"] == pytest.approx(1 / 3)
    assert metrics["retrain_seconds"] == models["oracle"]["seconds"] > 0
    assert models["ga"]["time_ratio"] == pytest.approx(models["ga"]["seconds"] / models["oracle"]["seconds"])
    md = (out / "report.md").read_text()
    for header in ("Membership-inference AUC", "Withdrawn-scan Dice", "Retained-scan Dice", "Held-out Dice"):
        assert header in md
    assert "MAE" not in md and f"| ga | {models['ga']['mia_auc']:.3f}" in md
    assert {p.name for p in (out / "figures").iterdir()} == {"membership.png"}
    # each unlearned model is a bundle of the source's configs and site index, with new weights, that audit reads
    for name in ("ga", "ga_l1_ft", "oracle"):
        assert models[name]["saved"] == str(out / f"bundle_{name}")
    unlearned = load_bundle_model(out / "bundle_ga", forget_cohort)
    original = load_bundle_model(segmentation_bundle, forget_cohort)
    assert isinstance(unlearned, SegmentationModel) and list(unlearned.site_index) == list(original.site_index)
    state = original.network.state_dict()
    assert any(not torch.equal(v, state[k]) for k, v in unlearned.network.state_dict().items() if v.is_floating_point())
    audited = audit_model(out / "bundle_ga", forget_cohort, tmp_path / "audit", permutations=0)
    assert audited["mean_dice"] == pytest.approx(models["ga"]["mean_dice"], rel=1e-5)


def test_a_segmentation_model_in_memory_is_written_as_its_weights(forget_cohort, tmp_path):
    torch.manual_seed(0)
    network = TissueSegmenter(channels=SEGMENTER_CHANNELS).eval()
    model = SegmentationModel(network, CategoryIndex(["site0", "site1", "site2"]), ("bottleneck",), batch_size=3)
    metrics = forget_model(model, forget_cohort, tmp_path / "out", ForgetSettings(method="ft", **FAST))
    assert metrics["model"] == "a model in memory"
    state = torch.load(tmp_path / "out" / "models" / "ft.pt", weights_only=True)
    fresh = TissueSegmenter(channels=SEGMENTER_CHANNELS)
    fresh.load_state_dict(state)  # a plain state_dict of the same network: a bundle's models/model.pt
    assert any(not torch.equal(v, network.state_dict()[k]) for k, v in state.items() if v.is_floating_point())


def test_bad_forget_lists_are_refused_before_anything_is_written(trained, tiny_cohort, tmp_path):
    model, _ = trained
    frame = read_manifest(tiny_cohort)
    cases = {"none": frame.assign(**{Keys.FORGET: False}),
             "all": frame.assign(**{Keys.FORGET: frame[Keys.SPLIT] == "train"}),
             "held-out": frame.assign(**{Keys.FORGET: frame[Keys.SPLIT] == "test"})}
    messages = {"none": "no training row is marked 'forget'", "all": "nothing is left to retain",
                "held-out": "are marked 'forget' but are not 'train' rows"}
    for name, marked in cases.items():
        path = write_manifest(marked, tmp_path / f"{name}.csv")
        with pytest.raises(ManifestError, match=messages[name]):
            forget_model(model, path, tmp_path / f"out_{name}", ForgetSettings(**FAST))
        assert not (tmp_path / f"out_{name}").exists()


def test_the_model_file_is_never_overwritten(trained, forget_cohort):
    model, weights = trained
    before = _digest(weights)
    with pytest.raises(OutputDirError, match=f"holds the input {weights}: outputs would be written among your data"):
        forget_model(model, forget_cohort, weights.parent, ForgetSettings(**FAST), overwrite=True)
    assert _digest(weights) == before


def test_segmentation_inputs_that_cannot_work_are_refused_before_any_model_is_written(
    segmentation_bundle, brain_age_model_file, forget_cohort, tmp_path
):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"nl trains on the withdrawn scans with noisy targets.*'ft', 'ga', 'ga_l1', "
                                          r"'ga_l1_ft'"):
        forget_model(segmentation_bundle, forget_cohort, out, ForgetSettings(**FAST), methods=["ga", "nl"])
    assert not (out / "bundle_ga").exists()
    with pytest.raises(HarmonizeError, match=f"The oracle {brain_age_model_file} is a BrainAgeRegressor, the model "
                                             f"{segmentation_bundle} a TissueSegmenter: give an oracle of the same"):
        forget_model(segmentation_bundle, forget_cohort, out, ForgetSettings(**FAST), overwrite=True,
                     oracle_model=brain_age_model_file)
    with pytest.raises(ConfigError, match=r"\['oracle_epochs'\] are for segmentation models"):
        forget_model(brain_age_model_file, forget_cohort, out, ForgetSettings(oracle_epochs=2, **FAST),
                     overwrite=True)
    frame = read_manifest(forget_cohort)
    unlabelled = frame[Keys.SUBJECT_ID].iloc[[0, 5]].tolist()
    frame.loc[frame.index[[0, 5]], Keys.LABEL] = None
    path = write_manifest(frame, tmp_path / "unlabelled.csv")
    with pytest.raises(ManifestError, match=rf"2 training or held-out row\(s\) have no 'label'.*{unlabelled}"):
        forget_model(segmentation_bundle, path, out, ForgetSettings(**FAST), overwrite=True)
    assert not list(out.glob("bundle_*")) and not (out / "models").exists()


def test_a_network_of_another_task_is_refused(forget_cohort, tmp_path):
    model = SegmentationModel(torch.nn.Linear(2, 2), CategoryIndex(["site0", "site1", "site2"]), ("encoder",))
    with pytest.raises(HarmonizeError, match=r"a model in memory: harmonize forget forgets subjects of brain_age "
                                             r"\(BrainAgeRegressor\), segmentation \(TissueSegmenter\) models; this is "
                                             "a Linear"):
        forget_model(model, forget_cohort, tmp_path / "out", ForgetSettings(**FAST))
