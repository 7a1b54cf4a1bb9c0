"""audit_model / audit_held_out on a brain-age model: probes and task error on held-out and unseen-site scans, and
the outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from harmonize import defaults
from harmonize.audit.feature_probes import feature_probes
from harmonize.data.manifest import read_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import HarmonizeError
from harmonize.keys import Keys
from harmonize.output_dir import RECORD_FILENAME
from harmonize.workflows.audit import (
    BrainAgeAudit,
    audit_held_out,
    audit_model,
    held_out_rows,
    input_files,
    prepare_output_dir,
    task_audit,
)
from harmonize.workflows.brain_age import (
    BrainAgeSettings,
    brain_age_features,
    train_brain_age,
)
from harmonize.workflows.model_file import save_model
from harmonize.workflows.unlearning import UnlearningSettings

CHANNELS = (8, 8, 8, 8)
#: The site kept out of training (its held-out neighbours hold two scans of each sex, so the sex probe runs).
UNSEEN = "site1"


@pytest.fixture(scope="module")
def frame(tiny_cohort):
    return read_manifest(tiny_cohort)


@pytest.fixture(scope="module")
def model(frame):
    """An unlearning model trained on site0 and site2 only."""
    unlearning = UnlearningSettings(method="unlearning", warmup_epochs=1, beta=1.0)
    settings = BrainAgeSettings(unlearning=unlearning, max_epochs=2, channels=CHANNELS, feature_dim=16, batch_size=4)
    seen = frame[frame[Keys.SITE] != UNSEEN]
    return train_brain_age(seen, settings, site_index=CategoryIndex(["site0", "site2"]))


def test_held_out_rows(frame):
    seen, unseen = held_out_rows(frame, CategoryIndex(["site0", "site2"]))
    assert sorted(seen[Keys.SITE].unique()) == ["site0", "site2"]
    assert set(seen[Keys.SPLIT]) == {"val", "test"} and len(seen) == 4
    assert set(unseen[Keys.SITE]) == {UNSEEN} and len(unseen) == 6  # every split of the unseen site


def test_audit_brain_age_scores_seen_and_unseen_scans(model, frame):
    assert isinstance(task_audit(model), BrainAgeAudit)  # the network picks the brain-age adapter
    metrics, features = audit_held_out(model, frame, permutations=5, seed=0)
    assert metrics["chance"] == pytest.approx(0.5)
    assert 0.0 <= metrics["site_probe_bacc"] <= 1.0
    assert metrics["site_probe_p"] == pytest.approx(round(metrics["site_probe_p"] * 6) / 6)  # (k + 1) / (5 + 1)
    assert metrics["n_subjects"] == 4 and metrics["n_unseen"] == 6
    assert metrics["unseen_sites"] == [UNSEEN]
    assert set(metrics["age_mae_per_site"]) == {"site0", "site2", f"{UNSEEN} (unseen)"}
    assert metrics["age_mae_per_site"][f"{UNSEEN} (unseen)"] == pytest.approx(metrics["unseen_site_mae"])
    assert "sex_probe_bacc" in metrics
    # the unseen MAE is the network's own error on all six scans of the unseen site
    assert features.features.shape == (10, 16 + defaults.AGE_HIDDEN)  # the default taps: features and hidden layer
    unseen = features.meta[Keys.SITE] == -1
    assert unseen.sum() == 6
    expected = np.mean(np.abs(features.predictions[unseen].reshape(-1) - features.meta[Keys.AGE][unseen]))
    assert metrics["unseen_site_mae"] == pytest.approx(float(expected), rel=1e-5)


def test_feature_probes_are_the_brain_age_audits_probes(model, frame):
    metrics, _ = audit_held_out(model, frame, permutations=5, seed=0)
    seen, _ = held_out_rows(frame, model.site_index)
    probes = feature_probes(brain_age_features(model, seen), permutations=5, seed=0)
    assert set(probes) == {"site_probe_bacc", "site_probe_p", "chance", "n_subjects", "age_probe_r2", "age_probe_mae",
                           "sex_probe_bacc", "site_probe_floor", "site_probe_conditional"}
    assert probes == pytest.approx({k: metrics[k] for k in probes})
    features = brain_age_features(model, seen)
    features.meta[Keys.AGE][:] = np.nan  # a manifest without ages: no age probe
    features.meta[Keys.SEX][1:] = 0  # one scan of one sex: no sex probe
    assert set(feature_probes(features)) == {"site_probe_bacc", "site_probe_p", "chance", "n_subjects"}


def test_audit_without_held_out_scans_of_training_sites(model, frame):
    with pytest.raises(HarmonizeError, match=r"No row of the manifest is in splits \['val', 'test'\] of the sites"):
        audit_held_out(model, frame[frame[Keys.SPLIT] == "train"])


def test_audit_model_writes_metrics_figures_and_report(model, frame, tmp_path, tiny_cohort):
    out = tmp_path / "audit"
    metrics = audit_model(model, tiny_cohort, out, permutations=5)
    written = json.loads((out / "metrics.json").read_text())
    assert written["method"] == "unlearning" and written["sites"] == ["site0", "site2"]
    assert written["unseen_site_mae"] == pytest.approx(metrics["unseen_site_mae"])
    assert written["manifest"] == str(tiny_cohort)
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["embeddings.png", "per_site_error.png",
                                                                   "training.png"]
    text = (out / "report.html").read_text()
    assert "<h2>Harmonisation methods</h2>" in text and '<td class="method">unlearning</td>' in text
    assert f">{metrics['site_probe_bacc']:.3f}<" in text and f">{metrics['unseen_site_mae']:.2f}<" in text
    assert f"Sites unseen in training ({UNSEEN}): 6 scans" in text
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 3
    with pytest.raises(HarmonizeError, match=r"is not empty: it holds the outputs of an earlier run \(\d+ file\(s\)\). Choose an empty or new --out, or pass --overwrite"):
        audit_model(model, tiny_cohort, out)


def test_audit_model_from_file_matches_the_model(model, tmp_path, tiny_cohort):
    path = save_model(model, tmp_path / "m.pt")
    direct, _ = audit_held_out(model, tiny_cohort, permutations=0)
    from_file = audit_model(path, tiny_cohort, tmp_path / "out", permutations=0)
    assert from_file["model"] == str(path)
    for key in ("site_probe_bacc", "age_mae", "unseen_site_mae", "age_probe_r2"):
        assert from_file[key] == pytest.approx(direct[key], rel=1e-5)


def test_loader_workers_read_the_scans_and_leave_the_figures_and_the_model_alone(model, tmp_path, tiny_cohort):
    direct, _ = audit_held_out(model, tiny_cohort, permutations=0)
    with_workers = audit_model(model, tiny_cohort, tmp_path / "out", permutations=0, num_workers=2)
    for key in ("site_probe_bacc", "age_mae", "unseen_site_mae", "age_probe_r2"):
        assert with_workers[key] == pytest.approx(direct[key], rel=1e-6)
    assert model.settings.num_workers == 0  # the audit used a copy of the settings


def test_audit_model_from_bundle(model, tmp_path, tiny_cohort):
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    net = {"_target_": "harmonize.networks.BrainAgeRegressor", "channels": list(CHANNELS), "feature_dim": 16}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net, "taps": "encoder"}))
    torch.save(model.network.state_dict(), bundle / "models" / "model.pt")
    model.site_index.save(bundle / "models" / "site_index.json")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "old.txt").write_text("x")  # an earlier run's output, as its record says: --overwrite removes it
    (out / RECORD_FILENAME).write_text(json.dumps({"files": ["old.txt"], "complete": True}))
    metrics = audit_model(bundle, tiny_cohort, out, overwrite=True, permutations=0)
    assert not (out / "old.txt").exists()
    direct, _ = audit_held_out(model, tiny_cohort, permutations=0)
    assert metrics["age_mae"] == pytest.approx(direct["age_mae"], rel=1e-5)
    assert metrics["seconds"] is None  # training time unknown for a bundle: written as null, not NaN
    assert "NaN" not in (out / "metrics.json").read_text()
    assert not (out / "figures" / "training.png").exists()  # no history, no training curves


def test_prepare_output_dir(tmp_path):
    assert prepare_output_dir(tmp_path / "new").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(HarmonizeError, match="is a file, not a folder"):
        prepare_output_dir(tmp_path / "file")


def test_output_dir_holding_an_input_is_refused_even_with_overwrite(tmp_path):
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("subject_id\n")
    out = tmp_path / "data"
    with pytest.raises(HarmonizeError, match=f"Output directory {out} holds the input {manifest}"):
        prepare_output_dir(out, overwrite=True, inputs=input_files(str(manifest)))
    assert manifest.read_text() == "subject_id\n"
    # a new folder below the data's is fine
    assert prepare_output_dir(tmp_path / "data" / "out", inputs=[manifest]).is_dir()


@pytest.mark.parametrize("argument", ["permutations", "seed"])
def test_negative_permutations_or_seed_are_refused_before_anything(argument, tiny_cohort, tmp_path):
    from harmonize.errors import ConfigError
    from harmonize.workflows.audit import audit_model

    with pytest.raises(ConfigError, match=rf"'{argument}' must be an integer >= 0, got -5 \(int\)"):
        audit_model(tmp_path / "none.pt", tiny_cohort, tmp_path / "out", **{argument: -5})
    assert not (tmp_path / "out").exists()


def test_summary_line_names_a_network_that_learnt_no_age():
    from harmonize.workflows.audit import summary_line

    figures = {"site_probe_bacc": 0.3, "chance": 0.25, "age_mae": 15.1, "final_task_loss": 0.98}
    assert summary_line("unlearning", figures).endswith(
        "; AGE NOT LEARNT: the last epoch's age loss was 0.98 (1 = the mean age), the adversary may have won before "
        "the task was learnt")
    assert "NOT LEARNT" not in summary_line("unlearning", {**figures, "final_task_loss": 0.4})
    assert "NOT LEARNT" not in summary_line("none", {k: v for k, v in figures.items() if k != "final_task_loss"})
