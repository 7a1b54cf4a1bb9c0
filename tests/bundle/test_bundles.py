"""Each bundle's train.json, evaluate.json and inference.json (and the variants) on the tiny cohort, in-process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run

from harmonize.data.manifest import read_manifest
from harmonize.keys import Keys, Split

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
AGE, SEG = BUNDLES / "brain_age_unlearning", BUNDLES / "tissue_seg_unlearning"
#: Networks small enough for 24^3 volumes and a second of training.
#: Tiny networks for the tests (the age network's three blocks end at block2, so its taps move there too).
NETWORKS = {AGE: {"network_def#channels": [4, 8, 8], "taps": ["encoder.block2", "encoder"]},
            SEG: {"network_def#channels": [4, 8, 16]}}
#: Tiny training: 3 sites -> batches of 6 (two scans per site), one warm-up epoch then one unlearning epoch.
TRAIN = {"max_epochs": 2, "batch_size": 6, "val_interval": 1, "progress": False, "unlearning#warmup_epochs": 1}


def run_bundle_config(bundle: Path, configs: list[str], root: Path, manifest: Path, **overrides) -> None:
    run(
        config_file=[str(bundle / "configs" / c) for c in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        bundle_root=str(root),
        manifest=str(manifest),
        **NETWORKS[bundle],
        **overrides,
    )


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _metrics(path: Path) -> dict[str, str]:
    """MONAI MetricsSaver's metrics.csv: one ``name,value`` line per metric."""
    return dict(line.split(",") for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    """bundle -> its bundle_root after train.json (2 epochs of fused site unlearning)."""
    roots = {}
    for bundle in (AGE, SEG):
        root = tmp_path_factory.mktemp(bundle.name)
        run_bundle_config(bundle, ["train.json"], root, tiny_cohort, **TRAIN)
        roots[bundle] = root
    return roots


@pytest.mark.parametrize("bundle", [AGE, SEG], ids=["age", "seg"])
def test_train_writes_the_state_dict_and_the_training_state(trained, bundle):
    root = trained[bundle]
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state_dict (MONAI convention)
    assert not any(k.startswith("module.") for k in state)
    assert json.loads((root / "models" / "site_index.json").read_text())["categories"] == ["site0", "site1", "site2"]
    full = torch.load(next((root / "eval" / "checkpoints").glob("*.pt")), weights_only=False)
    assert set(full) == {"model", "optimizer", "unlearning"}
    history = full["unlearning"]["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    assert "confusion_loss_site" not in history[0] and "confusion_loss_site" in history[1]  # warm-up, then fused


def test_age_network_is_scaled_to_the_training_ages(trained, tiny_cohort):
    frame = read_manifest(tiny_cohort)
    ages = frame.loc[frame[Keys.SPLIT] == Split.TRAIN, Keys.AGE].to_numpy(float)
    state = torch.load(trained[AGE] / "models" / "model.pt", weights_only=True)
    assert float(state["age_offset"]) == pytest.approx(ages.mean(), rel=1e-5)
    assert float(state["age_scale"]) == pytest.approx(ages.std(), rel=1e-5)


def test_age_evaluate_and_inference(trained, tiny_cohort):
    root = trained[AGE]
    run_bundle_config(AGE, ["evaluate.json"], root, tiny_cohort)
    rows = _csv(root / "eval" / "evaluate_predictions.csv")
    frame = read_manifest(tiny_cohort)
    test = frame[frame[Keys.SPLIT] == Split.TEST]
    assert sorted(r["subject_id"] for r in rows) == sorted(test[Keys.SUBJECT_ID])
    truth = dict(zip(test[Keys.SUBJECT_ID], test[Keys.AGE]))
    mae = np.mean([abs(float(r["predicted_age"]) - truth[r["subject_id"]]) for r in rows])
    metrics = _metrics(root / "eval" / "metrics.csv")
    assert float(metrics["mae"]) == pytest.approx(mae, abs=2e-3)

    run_bundle_config(AGE, ["inference.json"], root, tiny_cohort, split="all")
    predicted = _csv(root / "eval" / "predictions.csv")
    assert len(predicted) == len(frame) == 18
    assert {r["subject_id"]: float(r["predicted_age"]) for r in predicted if r["subject_id"] in truth} == \
        pytest.approx({r["subject_id"]: float(r["predicted_age"]) for r in rows}, abs=2e-3)


def test_age_inference_on_a_folder_of_images(trained, tiny_cohort):
    root = trained[AGE]
    out = root / "folder.csv"
    run(config_file=str(AGE / "configs" / "inference.json"), logging_file=False, bundle_root=str(root),
        images=[str(tiny_cohort.parent / "images")], output_file=str(out), **NETWORKS[AGE])
    rows = _csv(out)
    assert len(rows) == 18 and rows[0]["image"].endswith(".nii.gz")


def test_seg_evaluate_and_inference_keep_the_input_grid(trained, tiny_cohort):
    root = trained[SEG]
    run_bundle_config(SEG, ["evaluate.json"], root, tiny_cohort)
    metrics = _metrics(root / "eval" / "metrics.csv")
    assert 0.0 < float(metrics["mean_dice"]) <= 1.0
    run_bundle_config(SEG, ["inference.json"], root, tiny_cohort)
    frame = read_manifest(tiny_cohort)
    test = frame[frame[Keys.SPLIT] == Split.TEST]
    for sid, image in zip(test[Keys.SUBJECT_ID], test[Keys.IMAGE]):
        written = nib.load(root / "eval" / "segmentations" / f"{sid}_seg.nii.gz")
        source = nib.load(image)
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        labels = np.asarray(written.dataobj)
        assert labels.shape == source.shape and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2, 3}


@pytest.mark.parametrize(
    "bundle, variant, check",
    [
        (AGE, "baseline.json", lambda h: h is None),
        (AGE, "dann.json", lambda h: "confusion_loss_site" not in h[-1] and "domain_loss_site" in h[-1]),
        (AGE, "sex.json", lambda h: {"domain_acc_site", "domain_acc_sex"} <= set(h[-1])),
        (SEG, "multipoint.json", lambda h: "confusion_loss_site" in h[-1]),
        (SEG, "semisupervised.json", lambda h: "confusion_loss_site" in h[-1]),
        (AGE, "refit.json", lambda h: "refit_acc_site" in h[-1] and "refit_acc_site" not in h[0]),
    ],
    ids=["age-baseline", "age-dann", "age-sex", "seg-multipoint", "seg-semisupervised", "age-refit"],
)
def test_variants_train(bundle, variant, check, tiny_cohort, tmp_path):
    run_bundle_config(bundle, ["train.json", variant], tmp_path, tiny_cohort, **TRAIN)
    full = torch.load(next((tmp_path / "eval" / "checkpoints").glob("*.pt")), weights_only=False)
    assert check(full["unlearning"]["history"] if "unlearning" in full else None)
    assert (tmp_path / "models" / "model.pt").is_file()
