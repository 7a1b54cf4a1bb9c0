"""multi_gpu_evaluate.json: two CPU processes under torchrun (gloo backend, DistributedSampler) evaluate every scan."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from monai.bundle import run

from harmonize.data.manifest import read_manifest
from harmonize.keys import Keys, Split

from .conftest import run_torchrun

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.mark.slow
def test_two_process_cpu_evaluation_gathers_every_scan(tiny_preprocessed, tmp_path):
    bundle = BUNDLES / "brain_age_unlearning"
    network = {"network_def#channels": [4, 8, 8]}
    run(config_file=str(bundle / "configs" / "train.json"), logging_file=False, bundle_root=str(tmp_path),
        manifest=str(tiny_preprocessed), max_epochs=1, batch_size=6, progress=False,
        **{"unlearning#method": "none"}, **network)
    run_torchrun([
        "--config_file", "['configs/evaluate.json','configs/multi_gpu_evaluate.json']",
        "--bundle_root", str(tmp_path), "--manifest", str(tiny_preprocessed), "--batch_size", "2",
        "--network_def#channels", "[4,8,8]"
    ], cwd=bundle)
    frame = read_manifest(tiny_preprocessed)
    test = frame[frame[Keys.SPLIT] == Split.TEST]
    rows = list(csv.DictReader((tmp_path / "eval" / "evaluate_predictions.csv").read_text().splitlines()))
    assert sorted(r["subject_id"] for r in rows) == sorted(test[Keys.SUBJECT_ID])  # both shards, written once
    truth = dict(zip(test[Keys.SUBJECT_ID], test[Keys.AGE]))
    mae = sum(abs(float(r["predicted_age"]) - truth[r["subject_id"]]) for r in rows) / len(rows)
    metrics = dict(line.split(",") for line in (tmp_path / "eval" / "metrics.csv").read_text().splitlines())
    assert float(metrics["mae"]) == pytest.approx(mae, abs=2e-3)  # the metric is synchronised across ranks
