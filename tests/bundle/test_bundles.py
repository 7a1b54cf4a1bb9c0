"""Each bundle's train.json, evaluate.json and inference.json (and every variant) on the tiny cohort, in-process.

Training reads the tiny cohort preprocessed by ``harmonize preprocess`` (16^3 at 10 mm); inference is given the raw
scans (24^3 at 8.3 mm) and must preprocess them itself, giving what the preprocessed path gives.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from monai.bundle import ConfigWorkflow, download_large_files, run

from harmonize.bundle import install_error_hook
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
#: One epoch of unlearning from the first iteration (the variants).
ONE_EPOCH = {**TRAIN, "max_epochs": 1, "unlearning#warmup_epochs": 0}
#: Every variant overlay of a bundle: the configs other than these.
NOT_VARIANTS = {"train.json", "evaluate.json", "inference.json", "metadata.json", "multi_gpu_train.json", "forget.json",
                "multi_gpu_evaluate.json"}
VARIANTS = [(bundle, path.name) for bundle in (AGE, SEG) for path in sorted((bundle / "configs").glob("*.json"))
            if path.name not in NOT_VARIANTS]


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
def trained(tiny_preprocessed, tmp_path_factory):
    """bundle -> its bundle_root after train.json on the preprocessed tiny cohort (2 epochs, fused site unlearning)."""
    roots = {}
    for bundle in (AGE, SEG):
        root = tmp_path_factory.mktemp(bundle.name)
        run_bundle_config(bundle, ["train.json"], root, tiny_preprocessed, **TRAIN)
        roots[bundle] = root
    return roots


@pytest.mark.parametrize("bundle", [AGE, SEG], ids=["age", "seg"])
def test_train_writes_the_state_dict_and_the_training_state(trained, bundle):
    root = trained[bundle]
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state_dict (MONAI convention)
    assert not any(k.startswith("module.") for k in state)
    assert json.loads((root / "models" / "site_index.json").read_text())["categories"] == ["site0", "site1", "site2"]
    preprocessing = json.loads((root / "models" / "preprocessing.json").read_text())
    assert preprocessing["config"]["target_shape"] == [16, 16, 16] and len(preprocessing["pooled_landmarks"]) > 2
    assert sorted(preprocessing["landmarks"]) == ["site0", "site1", "site2"]
    full = torch.load(next((root / "eval" / "checkpoints").glob("*.pt")), weights_only=False)
    assert set(full) == {"model", "optimizer", "unlearning"}
    history = full["unlearning"]["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    assert "confusion_loss_site" not in history[0] and "confusion_loss_site" in history[1]  # warm-up, then fused


@pytest.mark.parametrize("bundle", [AGE, SEG], ids=["age", "seg"])
def test_large_files_name_what_training_writes(trained, bundle, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(trained[bundle] / "models", root / "models")
    text = (bundle / "large_files.yml").read_text()
    try:  # MONAI reads .yml with PyYAML; the file is YAML in JSON's flow style, so it is checked as JSON without it
        import yaml  # noqa: F401
        (root / "large_files.yml").write_text(text)
    except ImportError:
        (root / "large_files.json").write_text("\n".join(l for l in text.splitlines() if not l.startswith("#")))
    download_large_files(bundle_path=str(root))  # every listed file is in place: nothing to download, no error
    (root / "models" / "model.pt").unlink()
    with pytest.raises(ValueError):  # a missing one has no url to come from
        download_large_files(bundle_path=str(root))


def test_age_network_is_scaled_to_the_training_ages(trained, tiny_preprocessed):
    frame = read_manifest(tiny_preprocessed)
    ages = frame.loc[frame[Keys.SPLIT] == Split.TRAIN, Keys.AGE].to_numpy(float)
    state = torch.load(trained[AGE] / "models" / "model.pt", weights_only=True)
    assert float(state["age_offset"]) == pytest.approx(ages.mean(), rel=1e-5)
    assert float(state["age_scale"]) == pytest.approx(ages.std(), rel=1e-5)


def test_age_inference_on_raw_scans_gives_the_ages_of_the_preprocessed_path(trained, tiny_cohort, tiny_preprocessed):
    root = trained[AGE]
    run_bundle_config(AGE, ["evaluate.json"], root, tiny_preprocessed)  # the preprocessed path (harmonize preprocess)
    rows = _csv(root / "eval" / "evaluate_predictions.csv")
    frame = read_manifest(tiny_preprocessed)
    test = frame[frame[Keys.SPLIT] == Split.TEST]
    assert sorted(r["subject_id"] for r in rows) == sorted(test[Keys.SUBJECT_ID])
    truth = dict(zip(test[Keys.SUBJECT_ID], test[Keys.AGE]))
    mae = np.mean([abs(float(r["predicted_age"]) - truth[r["subject_id"]]) for r in rows])
    metrics = _metrics(root / "eval" / "metrics.csv")
    assert float(metrics["mae"]) == pytest.approx(mae, abs=2e-3)

    run_bundle_config(AGE, ["inference.json"], root, tiny_cohort, split="all")  # raw 24^3 scans at 8.3 mm
    predicted = _csv(root / "eval" / "predictions.csv")
    assert len(predicted) == len(frame) == 18
    assert {r["subject_id"]: float(r["predicted_age"]) for r in predicted if r["subject_id"] in truth} == \
        pytest.approx({r["subject_id"]: float(r["predicted_age"]) for r in rows}, abs=2e-3)
    assert {r["intensity_reference"] for r in predicted} == {"site site0", "site site1", "site site2"}
    assert all(r["warnings"] == "" for r in predicted)

    out = root / "preprocessed.csv"  # preprocessed scans with preprocess false: the same ages again
    run_bundle_config(AGE, ["inference.json"], root, tiny_preprocessed, split="test", preprocess="false",
                      output_file=str(out))
    assert {r["subject_id"]: float(r["predicted_age"]) for r in _csv(out)} == \
        pytest.approx({r["subject_id"]: float(r["predicted_age"]) for r in rows}, abs=2e-3)


def test_age_inference_on_a_folder_of_images_of_an_unseen_scanner(trained, tiny_cohort):
    root = trained[AGE]
    out = root / "folder.csv"
    run(config_file=str(AGE / "configs" / "inference.json"), logging_file=False, bundle_root=str(root),
        images=[str(tiny_cohort.parent / "images")], output_file=str(out), **NETWORKS[AGE])
    rows = _csv(out)
    assert len(rows) == 18 and rows[0]["image"].endswith(".nii.gz")
    assert {r["intensity_reference"] for r in rows} == {"pooled (no site given)"}
    run(config_file=str(AGE / "configs" / "inference.json"), logging_file=False, bundle_root=str(root),
        dataset_dir=str(tiny_cohort.parent / "images"), site="site1", output_file=str(out), **NETWORKS[AGE])
    assert {r["intensity_reference"] for r in _csv(out)} == {"site site1"}


def test_inference_never_replaces_a_file_it_did_not_write(trained, tiny_cohort, tmp_path):
    """A manual segmentation of the user's, where inference would write one: refused before any scan is read."""
    from harmonize.output_dir import OutputDirError

    raw = read_manifest(tiny_cohort)
    sid = min(raw.loc[raw[Keys.SPLIT] == Split.TEST, Keys.SUBJECT_ID])
    segs = tmp_path / "segs"
    segs.mkdir()
    manual = segs / f"{sid}_seg.nii.gz"
    manual.write_bytes(b"the user's manual segmentation")
    with pytest.raises(RuntimeError) as caught:
        run_bundle_config(SEG, ["inference.json"], trained[SEG], tiny_cohort, segmentation_dir=str(segs))
    cause = caught.value
    while cause is not None and not isinstance(cause, OutputDirError):
        cause = cause.__cause__
    assert cause is not None and f"would replace 1 file(s) that harmonize did not write: {manual}" in str(cause)
    assert manual.read_bytes() == b"the user's manual segmentation" and sorted(segs.iterdir()) == [manual]
    manual.rename(tmp_path / "mine.nii.gz")
    for _ in range(2):  # the second run replaces what the first wrote
        run_bundle_config(SEG, ["inference.json"], trained[SEG], tiny_cohort, segmentation_dir=str(segs))
    assert nib.load(segs / f"{sid}_seg.nii.gz").shape == (24, 24, 24)


def test_seg_inference_on_raw_scans_maps_the_segmentation_back_onto_the_input(trained, tiny_cohort, tiny_preprocessed):
    root = trained[SEG]
    run_bundle_config(SEG, ["evaluate.json"], root, tiny_preprocessed)
    metrics = _metrics(root / "eval" / "metrics.csv")
    assert 0.0 < float(metrics["mean_dice"]) <= 1.0
    pre_dir, near_dir = root / "pre_seg", root / "nearest_seg"
    run_bundle_config(SEG, ["inference.json"], root, tiny_preprocessed, preprocess=False,
                      segmentation_dir=str(pre_dir))  # the preprocessed path: a segmentation at 16^3, 10 mm
    run_bundle_config(SEG, ["inference.json"], root, tiny_cohort)  # raw scans; probabilities inverted (bilinear)
    run_bundle_config(SEG, ["inference.json"], root, tiny_cohort, segmentation_dir=str(near_dir),
                      **{"postprocessing#transforms#1#nearest_interp": True})
    raw = read_manifest(tiny_cohort)
    test = raw[raw[Keys.SPLIT] == Split.TEST]
    index = _csv(root / "eval" / "segmentations" / "segmentations.csv")
    assert sorted(r["subject_id"] for r in index) == sorted(test[Keys.SUBJECT_ID])
    assert all(r["intensity_reference"].startswith("site ") for r in index)
    for sid, image in zip(test[Keys.SUBJECT_ID], test[Keys.IMAGE]):
        written = nib.load(root / "eval" / "segmentations" / f"{sid}_seg.nii.gz")
        source = nib.load(image)
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        labels = np.asarray(written.dataobj)
        assert labels.shape == source.shape == (24, 24, 24) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        # the preprocessed path's segmentation, put on the input's grid by TorchIO, is the raw path's
        pre = nib.load(pre_dir / f"{sid}_seg.nii.gz")
        assert pre.shape == (16, 16, 16)
        moved = tio.Resample(tio.ScalarImage(image))(
            tio.LabelMap(tensor=torch.from_numpy(np.asarray(pre.dataobj, dtype=np.int16))[None], affine=pre.affine))
        nearest = np.asarray(nib.load(near_dir / f"{sid}_seg.nii.gz").dataobj)
        assert (nearest == moved.data[0].numpy()).mean() > 0.99


@pytest.mark.parametrize("bundle, variant", VARIANTS, ids=[f"{b.name.split('_')[0]}-{v[:-5]}" for b, v in VARIANTS])
def test_every_variant_trains_one_epoch(bundle, variant, tiny_cohort, tiny_cohort_biased, tmp_path):
    manifest = tiny_cohort_biased if variant.startswith("biased") else tiny_cohort
    run_bundle_config(bundle, ["train.json", variant], tmp_path, manifest, **ONE_EPOCH)
    assert (tmp_path / "models" / "model.pt").is_file()
    full = torch.load(next((tmp_path / "eval" / "checkpoints").glob("*.pt")), weights_only=False)
    history = full["unlearning"]["history"] if "unlearning" in full else None
    overlay = json.loads((bundle / "configs" / variant).read_text())
    # biased_agreement.json's age loss (SiteAgreementLoss) saves its running means with the training state
    assert ("age_loss" in full) == ("loss" in overlay)
    if "age_loss" in full:
        assert full["age_loss"]["site_seen"].all()
    if overlay.get("unlearning#method") == "none":
        assert history is None
        return
    gated = "unlearning#evidence_margin" in overlay
    assert ("evidence_site" in history[0]) == gated
    if gated and history[0]["evidence_site"] < overlay["unlearning#evidence_margin"]:  # the gate switched the site off
        assert not any(k.startswith(("confusion_loss", "refit_acc")) for k in history[-1])
    elif overlay.get("unlearning#method") == "dann":
        assert "domain_loss_site" in history[-1] and "confusion_loss_site" not in history[-1]
    else:
        assert "confusion_loss_site" in history[-1]
        if "unlearning#head_refit_steps" in overlay:
            assert "refit_acc_site" in history[-1]
    if "unlearning#confounds" in overlay:
        assert "domain_acc_sex" in history[-1]


@pytest.mark.parametrize("bundle", [AGE, SEG], ids=["age", "seg"])
@pytest.mark.parametrize("config, kind", [("train.json", "train"), ("evaluate.json", "infer"),
                                          ("inference.json", "infer")])
def test_monai_property_check_passes(bundle, config, kind, tiny_preprocessed, tmp_path):
    configs = bundle / "configs"
    workflow = ConfigWorkflow(config_file=str(configs / config), meta_file=str(configs / "metadata.json"),
                              workflow_type=kind, logging_file=False, bundle_root=str(tmp_path),
                              manifest=str(tiny_preprocessed), batch_size=6, **NETWORKS[bundle])
    workflow.initialize()
    assert workflow.check_properties() == []


@pytest.mark.parametrize("bundle", [AGE, SEG], ids=["age", "seg"])
def test_amp_reaches_the_trainer_and_the_evaluator(bundle, tiny_preprocessed, tmp_path):
    """``--amp true`` turns on MONAI's mixed precision in training and validation (off by default)."""
    configs = bundle / "configs"
    for amp in (False, True):
        workflow = ConfigWorkflow(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
                                  workflow_type="train", logging_file=False, bundle_root=str(tmp_path / str(amp)),
                                  manifest=str(tiny_preprocessed), batch_size=6, **NETWORKS[bundle],
                                  **({"amp": True} if amp else {}))
        workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        evaluator = workflow.parser.get_parsed_content("validate#evaluator")
        assert (trainer.amp, evaluator.amp) == (amp, amp)


def test_a_missing_image_is_one_error_line_naming_it(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.nii.gz"
    with pytest.raises(RuntimeError) as caught:  # what `python -m monai.bundle run` would leave uncaught
        run(config_file=str(AGE / "configs" / "inference.json"), logging_file=False, bundle_root=str(tmp_path),
            images=[str(missing)])
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)  # restored after the test
    install_error_hook()  # inference.json installs it in its `initialize`
    sys.excepthook(caught.type, caught.value, caught.tb)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == ["error: 1 of the images given to inference cannot be read.",
                                f"  - {missing}: no such file or folder"]
