"""The bundles' forget.json (train.json, then forget.json on its weights) and its helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import run

from harmonize.bundle import forget_manifest, trained_brain_age_model, trained_segmentation_model
from harmonize.data.manifest import read_manifest, write_manifest
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys
from harmonize.networks import BrainAgeRegressor, TissueSegmenter
from harmonize.workflows.model_file import load_model

AGE = Path(__file__).resolve().parents[2] / "bundles" / "brain_age_unlearning"
SEG = AGE.parent / "tissue_seg_unlearning"
#: A tiny network and one epoch of training (as the other bundle tests), then one epoch of each forgetting stage.
TINY = {"network_def#channels": [4, 8, 8], "taps": ["encoder.block2", "encoder"], "batch_size": 6, "val_interval": 1,
        "progress": False, "max_epochs": 1, "unlearning#warmup_epochs": 0}
FORGET = {"forget_ft_epochs": 1, "forget_epochs": 1, "forget_bootstrap": 20, "forget_fraction": 0.25}


def run_age(configs: list[str], root: Path, manifest: Path, bundle: Path = AGE, **overrides) -> None:
    run(config_file=[str(bundle / "configs" / c) for c in configs], meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False, bundle_root=str(root), manifest=str(manifest), **{**TINY, **overrides})


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("age_forget")
    run_age(["train.json"], root, tiny_cohort)
    return root


def test_forget_json_runs_one_epoch_on_the_trained_weights(trained, tiny_cohort):
    weights = (trained / "models" / "model.pt").read_bytes()
    run_age(["train.json", "forget.json"], trained, tiny_cohort, forget_method="nl_ft", **FORGET)
    assert (trained / "models" / "model.pt").read_bytes() == weights  # the trained model is only read
    out = trained / "eval" / "forget_nl_ft"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["nl_ft"] and metrics["n_forget"] == 3  # 25 % of each site's 4 training rows
    assert metrics["model"] == str(trained / "models" / "model.pt")
    assert metrics["models"]["nl_ft"]["mia_n_nonmembers"] == 6 and (out / "report.html").is_file()
    unlearned = load_model(out / "models" / "nl_ft.pt")
    assert unlearned.settings.taps == ("encoder.block2", "encoder") and unlearned.settings.channels == (4, 8, 8)
    original = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert not torch.equal(unlearned.network.state_dict()["regressor.out.weight"], original["regressor.out.weight"])


def test_trained_brain_age_model_reads_the_weights_and_site_index(trained):
    network = BrainAgeRegressor(channels=(4, 8, 8))
    model = trained_brain_age_model(network, trained / "models", taps=["encoder"], batch_size=6, max_epochs=4,
                                    unlearning={"method": "unlearning", "beta": 2.0})
    saved = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert torch.equal(model.network.state_dict()["regressor.out.weight"], saved["regressor.out.weight"])
    assert list(model.site_index) == ["site0", "site1", "site2"] and model.settings.max_epochs == 4
    assert model.settings.unlearning.beta == 2.0 and model.settings.taps == ("encoder",)
    with pytest.raises(HarmonizeError, match="run the bundle's train.json first"):
        trained_brain_age_model(network, trained / "missing")
    with pytest.raises(HarmonizeError, match="do not fit"):
        trained_brain_age_model(BrainAgeRegressor(channels=(4, 8)), trained / "models")


def test_forget_manifest_keeps_a_given_list_or_draws_one(tiny_cohort, tmp_path):
    drawn = forget_manifest(tiny_cohort, 0.25, seed=0)
    assert int(drawn[Keys.FORGET].sum()) == 3
    frame = read_manifest(tiny_cohort)
    frame[Keys.FORGET] = frame[Keys.SUBJECT_ID] == frame[Keys.SUBJECT_ID].iloc[0]
    given = forget_manifest(write_manifest(frame, tmp_path / "m.csv"), 0.25, seed=0)
    assert given[Keys.FORGET].tolist() == frame[Keys.FORGET].tolist()


def test_the_segmentation_bundles_forget_json(tiny_cohort, tmp_path):
    tiny = {"network_def#channels": [4, 8, 16], "taps": ["bottleneck"]}
    run_age(["train.json"], tmp_path, tiny_cohort, bundle=SEG, **tiny)
    weights = (tmp_path / "models" / "model.pt").read_bytes()
    run_age(["train.json", "forget.json"], tmp_path, tiny_cohort, bundle=SEG, forget_method="ga_l1_ft", **FORGET,
            **tiny)
    assert (tmp_path / "models" / "model.pt").read_bytes() == weights  # the trained model is only read
    out = tmp_path / "eval" / "forget_ga_l1_ft"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["ga_l1_ft"] and metrics["n_forget"] == 3
    assert metrics["settings"]["oracle_epochs"] == 1  # the bundle's max_epochs, for forget_oracle=true
    for name in ("original", "ga_l1_ft"):
        assert 0 <= metrics["models"][name]["mean_dice"] <= 1 and 0 <= metrics["models"][name]["mia_auc"] <= 1
    unlearned = TissueSegmenter(channels=(4, 8, 16))
    unlearned.load_state_dict(torch.load(out / "models" / "ga_l1_ft.pt", weights_only=True))
    model = trained_segmentation_model(TissueSegmenter(channels=(4, 8, 16)), tmp_path / "models", taps="bottleneck")
    assert model.taps == ("bottleneck",) and list(model.site_index) == ["site0", "site1", "site2"]
    assert not all(torch.equal(p, q) for p, q in zip(unlearned.parameters(), model.network.parameters()))
