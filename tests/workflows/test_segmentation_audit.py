"""audit_held_out / audit_model on a tissue segmenter: Dice per tissue and site (MONAI's), probes, outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice
from monai.networks import one_hot
from monai.transforms import NormalizeIntensityd

from harmonize.data.dataset import make_dataset
from harmonize.data.manifest import read_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.keys import Keys, Task
from harmonize.networks import BrainAgeRegressor, TissueSegmenter
from harmonize.workflows.audit import audit_held_out, audit_model, audit_task, task_audit
from harmonize.workflows.bundle_model import load_bundle_model
from harmonize.workflows.segmentation_audit import (
    SegmentationAudit,
    SegmentationModel,
    dice_summary,
    segmentation_features,
    tissue_names,
)

CHANNELS = (4, 8, 16)
#: The site kept out of training, as in tests/workflows/test_audit.py.
UNSEEN = "site1"
TRAINED = ["site0", "site2"]
TRANSFORM = {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True}


@pytest.fixture(scope="module")
def frame(tiny_cohort):
    return read_manifest(tiny_cohort)


@pytest.fixture(scope="module")
def network():
    """An untrained tissue segmenter (fixed seed): its Dice is low but real, and the audit needs no training."""
    torch.manual_seed(0)
    net = TissueSegmenter(channels=CHANNELS)
    return net.eval()


@pytest.fixture(scope="module")
def model(network):
    return SegmentationModel(network, CategoryIndex(TRAINED), ("bottleneck", "final"), method="unlearning",
                             transform=NormalizeIntensityd(keys="image", nonzero=True))


@pytest.fixture(scope="module")
def audited(model, frame):
    return audit_held_out(model, frame, permutations=5, seed=0)  # the network picks the segmentation adapter


def test_tissue_names():
    assert tissue_names(4) == ("csf", "gm", "wm")  # the cohort's labels 1..3
    assert tissue_names(3) == ("class1", "class2")


def test_dice_summary_is_monai_reduction_on_a_known_case():
    scores = np.array([[0.5, np.nan, 1.0], [0.7, 0.2, np.nan], [np.nan, np.nan, np.nan]])
    mean, per_tissue = dice_summary(scores, ("csf", "gm", "wm"))
    assert mean == pytest.approx((0.75 + 0.45) / 2)  # each scan's mean over its tissues, then over scans
    assert per_tissue == pytest.approx({"csf": 0.6, "gm": 0.2, "wm": 1.0})
    assert dice_summary(np.full((2, 2), np.nan), ("a", "b")) == (None, {"a": None, "b": None})
    assert dice_summary(np.zeros((0, 2)), ("a", "b")) == (None, {"a": None, "b": None})


def test_per_scan_dice_equals_monai_compute_dice(model, frame):
    rows = frame[frame[Keys.SITE].isin(TRAINED) & (frame[Keys.SPLIT] != "train")]
    features, scores = segmentation_features(model, rows)
    assert features.predictions is None and features.features.shape == (4, 16 + 4)  # bottleneck + final channels
    dataset = make_dataset(rows, site_index=model.site_index, transform=model.transform)
    with torch.no_grad():
        image = torch.stack([dataset[i][Keys.IMAGE] for i in range(len(dataset))])
        label = torch.stack([dataset[i][Keys.LABEL] for i in range(len(dataset))])
        prediction = model.network(image).argmax(1, keepdim=True)
    expected = compute_dice(one_hot(prediction, 4), one_hot(label, 4), include_background=False)
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-6)
    assert scores.shape == (4, 3) and np.all((scores >= 0) & (scores <= 1))


def test_audit_segmentation_scores_seen_and_unseen_scans(audited):
    metrics, features = audited
    assert metrics["task"] == "segmentation" and metrics["tissues"] == ["csf", "gm", "wm"]
    assert metrics["chance"] == pytest.approx(0.5) and 0.0 <= metrics["site_probe_bacc"] <= 1.0
    assert metrics["site_probe_p"] == pytest.approx(round(metrics["site_probe_p"] * 6) / 6)  # (k + 1) / (5 + 1)
    assert metrics["n_subjects"] == 4 and metrics["n_labelled"] == 4 and metrics["n_unseen"] == 6
    assert {"age_probe_r2", "age_probe_mae", "sex_probe_bacc"} <= set(metrics)
    assert set(metrics["dice_per_tissue"]) == {"csf", "gm", "wm"}
    assert set(metrics["dice_per_site"]) == {"site0", "site2", f"{UNSEEN} (unseen)"}
    for entry in metrics["dice_per_site"].values():
        assert set(entry) == {"csf", "gm", "wm", "mean"}
    values = [metrics["mean_dice"], metrics["unseen_site_dice"], *metrics["dice_per_tissue"].values(),
              *(v for e in metrics["dice_per_site"].values() for v in e.values())]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert metrics["unseen_sites"] == [UNSEEN]
    assert metrics["unseen_site_dice"] == pytest.approx(metrics["dice_per_site"][f"{UNSEEN} (unseen)"]["mean"])
    assert metrics["unseen_site_dice_per_tissue"] == pytest.approx(
        {k: v for k, v in metrics["dice_per_site"][f"{UNSEEN} (unseen)"].items() if k != "mean"})
    assert metrics["seconds"] is None
    assert features.features.shape == (10, 20) and (features.meta[Keys.SITE] == -1).sum() == 6


def test_scans_without_label_maps_are_probed_not_scored(model, frame, audited, caplog):
    partial = frame.copy()
    partial[Keys.LABEL] = partial[Keys.LABEL].astype(object)
    partial.loc[partial[Keys.SITE] == UNSEEN, Keys.LABEL] = None
    first = partial.index[(partial[Keys.SITE] == "site0") & (partial[Keys.SPLIT] == "val")][0]
    partial.loc[first, Keys.LABEL] = None
    metrics, features = audit_held_out(model, partial, permutations=0)
    assert metrics["n_subjects"] == 4 and metrics["n_labelled"] == 3
    assert metrics["site_probe_bacc"] == pytest.approx(audited[0]["site_probe_bacc"])  # every scan is probed
    assert "unseen_site_dice" not in metrics and set(metrics["dice_per_site"]) == set(TRAINED)
    assert "have no label maps: their Dice is not measured" in caplog.text
    assert len(features) == 4


def test_the_segmentation_adapter_refuses_a_post_hoc_harmonisation(model):
    assert isinstance(task_audit(model), SegmentationAudit)
    with pytest.raises(ConfigError, match="Argument 'harmonise': a post-hoc harmonisation predicts ages"):
        task_audit(model, harmonise=lambda features: features)


def test_audit_segmentation_errors(model, frame):
    with pytest.raises(HarmonizeError, match=r"No row of the manifest is in splits \['val', 'test'\] of the sites"):
        audit_held_out(model, frame[frame[Keys.SPLIT] == "train"])
    with pytest.raises(HarmonizeError, match="have no 'label' \\(label map\\) paths: the Dice of a segmentation"):
        audit_held_out(model, frame.drop(columns=[Keys.LABEL]))
    three = SegmentationModel(TissueSegmenter(out_channels=3, channels=CHANNELS), CategoryIndex(TRAINED), "final")
    with pytest.raises(HarmonizeError, match=r"hold values outside 0\.\.2, the classes of the network"):
        audit_held_out(three, frame, permutations=0)


def _bundle(root, network, **ids):
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net = {"_target_": "harmonize.networks.TissueSegmenter", "channels": list(CHANNELS)}
    config = {"imports": ["$import os"], "bundle_root": ".", "output_dir": "$os.path.join(@bundle_root, 'eval')",
              "network_def": net, "transforms": TRANSFORM, **ids}
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def test_audit_model_of_a_segmentation_bundle(network, model, audited, frame, tiny_cohort, tmp_path):
    bundle = _bundle(tmp_path / "bundle", network)
    (bundle / "configs" / "train.json").write_text(json.dumps({"taps": ["bottleneck", "final"],
                                                                "unlearning": {"method": "unlearning"}}))
    CategoryIndex(TRAINED).save(bundle / "models" / "site_index.json")
    history = [{"epoch": 1.0, "domain_acc_site": 0.9}, {"epoch": 2.0, "domain_acc_site": 0.6,
                                                         "confusion_loss_site": 0.7}]
    (bundle / "eval" / "checkpoints").mkdir(parents=True)
    torch.save({"model": network.state_dict(), "unlearning": {"history": history}},
               bundle / "eval" / "checkpoints" / "checkpoint_epoch=2.pt")
    loaded = load_bundle_model(bundle, tiny_cohort)
    assert isinstance(loaded, SegmentationModel) and loaded.taps == ("bottleneck", "final")
    assert isinstance(loaded.transform, NormalizeIntensityd) and loaded.history == history

    out = tmp_path / "out"
    metrics = audit_model(bundle, tiny_cohort, out, permutations=5, num_workers=1)  # a loader worker reads the scans
    direct, _ = audited  # the same network, taps and transform, in memory
    for key in ("mean_dice", "unseen_site_dice", "site_probe_bacc", "site_probe_p"):
        assert metrics[key] == pytest.approx(direct[key], rel=1e-5)
    assert metrics["domain_head_acc"] == pytest.approx(0.6)
    written = json.loads((out / "metrics.json").read_text())
    assert written["method"] == "unlearning" and written["sites"] == TRAINED and written["model"] == str(bundle)
    assert written["dice_per_site"] == metrics["dice_per_site"]  # floats survive JSON exactly
    assert "NaN" not in (out / "metrics.json").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["embeddings.png", "per_site_dice.png",
                                                                   "training.png"]
    text = (out / "report.html").read_text()
    for header in ("Mean Dice", "CSF Dice", "GM Dice", "WM Dice", "Unseen-site Dice", "Sex-probe bacc"):
        assert f">{header}</th>" in text, header
    assert "Age MAE" not in text and "Seconds" not in text  # brain-age columns and unmeasured ones are left out
    assert f">{metrics['mean_dice']:.3f}<" in text and f">{metrics['dice_per_tissue']['gm']:.3f}<" in text
    assert f"Sites unseen in training ({UNSEEN}): 6 scans, mean Dice {metrics['unseen_site_dice']:.3f}" in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 3
    (bundle / "eval" / "checkpoints" / "checkpoint_epoch=3.pt").write_text("damaged")  # the newest checkpoint
    assert load_bundle_model(bundle, tiny_cohort).history == []  # no curves, but the audit still runs


def test_a_network_of_another_task_is_refused(tmp_path, tiny_cohort):
    assert audit_task(TissueSegmenter(channels=CHANNELS)) == Task.SEGMENTATION
    assert audit_task(BrainAgeRegressor(channels=(4, 4), feature_dim=4)) == Task.BRAIN_AGE
    with pytest.raises(HarmonizeError, match=r"cannot audit a Linear network: it measures BrainAgeRegressor "
                                             r"\(brain_age\), TissueSegmenter \(segmentation\) networks"):
        audit_task(torch.nn.Linear(2, 2))
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    conv = {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": conv}))
    torch.save(torch.nn.Conv3d(1, 2, 1).state_dict(), bundle / "models" / "model.pt")
    with pytest.raises(HarmonizeError, match="cannot audit a Conv3d network"):
        audit_model(bundle, tiny_cohort, tmp_path / "out", permutations=0)
    assert not (tmp_path / "out").exists()  # refused before anything is written; the folder it made is removed
