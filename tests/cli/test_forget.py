"""``harmonize forget``: a model file or bundle folder and a forget list in; models, metrics and report out."""

from __future__ import annotations

import json

import pytest
import torch

from harmonize.cli.main import main
from harmonize.data.forget_list import mark_forget
from harmonize.data.manifest import read_manifest, write_manifest
from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
from harmonize.workflows.model_file import save_model
from harmonize.workflows.unlearning import UnlearningSettings

CHANNELS = (8, 8, 8, 8)
FAST = ["--ft-epochs", "1", "--forget-epochs", "1", "--bootstrap", "10"]


@pytest.fixture(scope="module")
def files(tiny_cohort, tmp_path_factory):
    """(model file, manifest with one withdrawn training subject per site)."""
    folder = tmp_path_factory.mktemp("forget_cli")
    settings = BrainAgeSettings(unlearning=UnlearningSettings(method="none"), max_epochs=1, channels=CHANNELS,
                                feature_dim=16, batch_size=6)
    model = save_model(train_brain_age(tiny_cohort, settings), folder / "none.pt")
    manifest = write_manifest(mark_forget(read_manifest(tiny_cohort), 0.25, seed=0), folder / "manifest.csv")
    return model, manifest


def test_forget_a_model_file_with_two_methods(files, tmp_path, capsys):
    model, manifest = files
    out = tmp_path / "out"
    assert main(["forget", "--model", str(model), "--manifest", str(manifest), "--method", "ft,nl_ft", "--out",
                 str(out), "--seed", "1", "--loss-ceiling", "none", *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["ft", "nl_ft"] and metrics["n_forget"] == 3
    assert metrics["settings"]["loss_ceiling"] is None
    assert metrics["settings"]["seed"] == 1 and metrics["settings"]["bootstrap"] == 10
    assert sorted(p.name for p in (out / "models").iterdir()) == ["ft.pt", "nl_ft.pt"]
    assert metrics["models"]["ft"]["time_ratio"] is not None  # against the original's recorded training time
    assert "membership AUC: original" in capsys.readouterr().err
    # the unlearned model is a model file that harmonize audit reads
    assert main(["audit", "--checkpoint", str(out / "models" / "nl_ft.pt"), "--manifest", str(manifest), "--out",
                 str(tmp_path / "audit"), "--permutations", "0"]) == 0


def test_a_retrained_model_file_is_the_oracle(files, tmp_path):
    model, manifest = files
    out = tmp_path / "out"
    assert main(["forget", "--model", str(model), "--manifest", str(manifest), "--method", "ft", "--oracle-model",
                 str(model), "--out", str(out), *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    oracle, original = metrics["models"]["oracle"], metrics["models"]["original"]
    assert oracle["mia_auc"] == original["mia_auc"] and oracle["age_mae"] == pytest.approx(original["age_mae"])
    assert metrics["retrain_seconds"] == pytest.approx(torch.load(model, weights_only=True)["seconds"])
    assert not (out / "models" / "oracle.pt").exists()  # the given oracle is only read


def test_forget_a_bundle_gives_a_bundle_that_audit_reads(files, tmp_path):
    model, manifest = files
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    net = {"_target_": "harmonize.networks.BrainAgeRegressor", "channels": list(CHANNELS), "feature_dim": 16}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net, "taps": ["encoder"]}))
    torch.save(torch.load(model, weights_only=True)["network"], bundle / "models" / "model.pt")
    weights = (bundle / "models" / "model.pt").read_bytes()
    out = tmp_path / "out"
    assert main(["forget", "--model", str(bundle), "--manifest", str(manifest), "--method", "ga", "--out", str(out),
                 *FAST]) == 0
    assert (bundle / "models" / "model.pt").read_bytes() == weights
    unlearned = out / "bundle_ga"
    assert (unlearned / "configs" / "inference.json").is_file() and (unlearned / "models" / "site_index.json").is_file()
    state = torch.load(unlearned / "models" / "model.pt", weights_only=True)
    assert set(state) == set(torch.load(bundle / "models" / "model.pt", weights_only=True))
    assert main(["audit", "--bundle", str(unlearned), "--manifest", str(manifest), "--out", str(tmp_path / "audit"),
                 "--permutations", "0"]) == 0
    audited = json.loads((tmp_path / "audit" / "metrics.json").read_text())
    forgot = json.loads((out / "metrics.json").read_text())["models"]["ga"]
    assert audited["age_mae"] == pytest.approx(forgot["age_mae"], rel=1e-4)


def test_segmentation_settings_for_a_brain_age_model_are_one_error_line(files, tmp_path, capsys):
    model, manifest = files
    assert main(["forget", "--model", str(model), "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                 "--oracle-epochs", "3", "--segmentation-loss-ceiling", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "['segmentation_loss_ceiling', 'oracle_epochs'] are for segmentation models" in err


def test_a_manifest_without_a_forget_list_is_one_error_line(files, tiny_cohort, tmp_path, capsys):
    model, _ = files
    assert main(["forget", "--model", str(model), "--manifest", str(tiny_cohort), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "has no 'forget' column" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argument, value, message",
    [
        ("--method", "ft,sgd", "must be one or more of ft, ga, ga_l1, ga_l1_ft, nl, nl_ft separated by commas"),
        ("--lr", "0", "argument --lr: must be a number > 0 and <= 1, got '0'"),
        ("--ft-epochs", "0", "argument --ft-epochs: must be an integer from 1"),
        ("--bootstrap", "-1", "argument --bootstrap: must be an integer from 0"),
        ("--loss-ceiling", "0", "argument --loss-ceiling: must be a number > 0, got '0', or 'none' for no ceiling"),
        ("--oracle-model", "other.pt --oracle", "argument --oracle: not allowed with argument --oracle-model"),
        ("--segmentation-loss-ceiling", "-1", ("argument --segmentation-loss-ceiling: must be a number > 0, got '-1', "
                                               "or 'none' for no ceiling")),
        ("--oracle-epochs", "0", "argument --oracle-epochs: must be an integer from 1"),
    ],
)
def test_bad_options_are_usage_errors(files, tmp_path, capsys, argument, value, message):
    model, manifest = files
    with pytest.raises(SystemExit) as caught:
        main(["forget", "--model", str(model), "--manifest", str(manifest), "--out", str(tmp_path / "o"), argument,
              *value.split()])
    assert caught.value.code == 2 and message in capsys.readouterr().err
