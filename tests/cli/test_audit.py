"""``harmonize audit``: a model file or a bundle folder in, metrics.json and report.html out; errors in one line."""

from __future__ import annotations

import json

import pytest
import torch

from harmonize import defaults
from harmonize.cli.main import main
from harmonize.data.site_index import CategoryIndex
from harmonize.networks import TissueSegmenter
from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
from harmonize.workflows.model_file import save_model
from harmonize.workflows.unlearning import UnlearningSettings

CHANNELS = (8, 8, 8, 8)


@pytest.fixture(scope="module")
def checkpoint(tiny_cohort, tmp_path_factory):
    settings = BrainAgeSettings(unlearning=UnlearningSettings(method="none"), max_epochs=1, channels=CHANNELS,
                                feature_dim=16, batch_size=6)
    model = train_brain_age(tiny_cohort, settings, site_index=CategoryIndex(["site0", "site1", "site2"]))
    return save_model(model, tmp_path_factory.mktemp("model") / "none.pt")


def test_audit_a_checkpoint(checkpoint, tiny_cohort, tmp_path):
    out = tmp_path / "out"
    assert main(["audit", "--checkpoint", str(checkpoint), "--manifest", str(tiny_cohort), "--out", str(out),
                 "--permutations", "3", "--seed", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == str(checkpoint) and metrics["method"] == "none"
    assert metrics["chance"] == pytest.approx(1 / 3) and metrics["n_subjects"] == 6
    assert metrics["site_probe_p"] is not None and "unseen_site_mae" not in metrics  # every site was trained on
    assert '<td class="method">none</td>' in (out / "report.html").read_text()


def test_audit_a_bundle(checkpoint, tiny_cohort, tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    net = {"_target_": "harmonize.networks.BrainAgeRegressor", "channels": list(CHANNELS), "feature_dim": 16}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net, "taps": list(defaults.AGE_TAPS)}))
    torch.save(torch.load(checkpoint, weights_only=True)["network"], bundle / "models" / "model.pt")
    out = tmp_path / "out"
    assert main(["audit", "--bundle", str(bundle), "--manifest", str(tiny_cohort), "--out", str(out),
                 "--permutations", "0"]) == 0
    from_bundle = json.loads((out / "metrics.json").read_text())
    assert main(["audit", "--checkpoint", str(checkpoint), "--manifest", str(tiny_cohort), "--out", str(out),
                 "--permutations", "0", "--overwrite"]) == 0
    from_file = json.loads((out / "metrics.json").read_text())
    assert from_bundle["age_mae"] == pytest.approx(from_file["age_mae"], rel=1e-5)
    assert from_bundle["site_probe_bacc"] == pytest.approx(from_file["site_probe_bacc"])


def test_audit_errors(checkpoint, tiny_cohort, tmp_path, capsys):
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(checkpoint, weights_only=True)["network"], plain)
    assert main(["audit", "--checkpoint", str(plain), "--manifest", str(tiny_cohort), "--out",
                 str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(plain) in err and "plain state_dict" in err and "Traceback" not in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["audit", "--checkpoint", str(checkpoint), "--manifest", str(tiny_cohort), "--out",
                 str(tmp_path / "full")]) == 1
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # exactly one of --bundle and --checkpoint
        main(["audit", "--bundle", "b", "--checkpoint", "c", "--manifest", "m", "--out", "o"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_scans_not_preprocessed_as_the_training_scans_are_refused(checkpoint, tiny_cohort, tmp_path, capsys):
    """A model of preprocessed scans given the raw manifest: refused (its site probe would read 1.000 silently)."""
    content = torch.load(checkpoint, weights_only=True)
    assert content["inputs"]["shape"] == [24, 24, 24] and content["inputs"]["standardised"] is False
    content["inputs"].update(standardised=True, shape=[32, 32, 32])
    torch.save(content, tmp_path / "preprocessed.pt")
    argv = ["audit", "--checkpoint", str(tmp_path / "preprocessed.pt"), "--manifest", str(tiny_cohort), "--out",
            str(tmp_path / "out"), "--permutations", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: The scans of {tiny_cohort} are not preprocessed as the training scans of")
    assert "  - shape: the model was trained on (32, 32, 32) voxels" in err and "its intensities are raw" in err
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert main([*argv, "--no-input-check", "--overwrite"]) == 0
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_a_text_file_as_checkpoint_is_named(tiny_cohort, tmp_path, capsys):
    (tmp_path / "six.pt").write_text("hello\n")
    assert main(["audit", "--checkpoint", str(tmp_path / "six.pt"), "--manifest", str(tiny_cohort), "--out",
                 str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: Model file '{tmp_path / 'six.pt'}' is not a PyTorch file: it is 6 byte(s) long and starts "
                   "with b'hello\\n' (a PyTorch file starts with a zip or pickle header). Give the .pt file written by "
                   "harmonize compare or save_model (or a bundle's models/model.pt).\n")


def test_audit_a_segmentation_bundle(tiny_cohort, tmp_path):
    bundle = tmp_path / "seg"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    net = {"_target_": "harmonize.networks.TissueSegmenter", "channels": [4, 8, 16]}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net, "taps": ["bottleneck"]}))
    torch.manual_seed(0)
    torch.save(TissueSegmenter(channels=(4, 8, 16)).state_dict(), bundle / "models" / "model.pt")
    out = tmp_path / "out"
    assert main(["audit", "--bundle", str(bundle), "--manifest", str(tiny_cohort), "--out", str(out),
                 "--permutations", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["model"] == str(bundle)
    assert metrics["n_subjects"] == 6 and "unseen_site_dice" not in metrics  # every site was trained on
    assert set(metrics["dice_per_site"]) == {"site0", "site1", "site2"}
    assert 0.0 <= metrics["mean_dice"] <= 1.0
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["embeddings.png", "per_site_dice.png"]
    assert ">Mean Dice</th>" in (out / "report.html").read_text()


def _preprocessing(bundle, **config):
    """A bundle's models/preprocessing.json as train.json writes it (harmonize.bundle.save_preprocessing)."""
    content = {"format": "harmonize-bundle-preprocessing", "version": 1, "manifest": "/train/pre/manifest.csv",
               "config": config or None}
    (bundle / "models" / "preprocessing.json").write_text(json.dumps(content))


@pytest.mark.parametrize("task", ["brain age", "segmentation"])
def test_a_bundle_of_preprocessed_scans_refuses_raw_scans(checkpoint, task, tiny_cohort, tmp_path, capsys):
    """audit --bundle checks the scans against the bundle's training preprocessing, for either task."""
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    if task == "brain age":
        net = {"_target_": "harmonize.networks.BrainAgeRegressor", "channels": list(CHANNELS), "feature_dim": 16}
        torch.save(torch.load(checkpoint, weights_only=True)["network"], bundle / "models" / "model.pt")
    else:
        net = {"_target_": "harmonize.networks.TissueSegmenter", "channels": [4, 8, 16]}
        torch.save(TissueSegmenter(channels=(4, 8, 16)).state_dict(), bundle / "models" / "model.pt")
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net}))
    _preprocessing(bundle, target_spacing=6.0, target_shape=[32, 32, 32], histogram_standardisation=True)
    argv = ["audit", "--bundle", str(bundle), "--manifest", str(tiny_cohort), "--out", str(tmp_path / "out"),
            "--permutations", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    err = err[err.index("error:"):]  # after the log line that the site index was rebuilt
    assert err.startswith(f"error: The scans of {tiny_cohort} are not preprocessed as the training scans of {bundle} "
                          "were")
    assert f"(harmonize preprocess {tiny_cohort} --out DIR --spacing 6 --shape 32 32 32)" in err
    assert "  - shape: the model was trained on (32, 32, 32) voxels" in err
    assert "  - spacing: the model was trained on (6.0, 6.0, 6.0) mm voxels" in err
    assert "has no preprocess.json beside it, so its intensities are raw" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert main([*argv, "--no-input-check", "--overwrite"]) == 0
    _preprocessing(bundle)  # trained on scans harmonize did not preprocess, as these are: they pass
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["model"] == str(bundle)
