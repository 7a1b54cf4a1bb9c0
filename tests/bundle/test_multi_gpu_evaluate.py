"""multi_gpu_evaluate.json: two CPU processes under torchrun (gloo backend, DistributedSampler) evaluate every scan."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import run

from harmonize.data.manifest import read_manifest
from harmonize.keys import Keys, Split

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
#: Seconds the two-process run may take before the test fails.
TIMEOUT = 240


@pytest.mark.slow
def test_two_process_cpu_evaluation_gathers_every_scan(tiny_preprocessed, tmp_path):
    bundle = BUNDLES / "brain_age_unlearning"
    network = {"network_def#channels": [4, 8, 8]}
    run(config_file=str(bundle / "configs" / "train.json"), logging_file=False, bundle_root=str(tmp_path),
        manifest=str(tiny_preprocessed), max_epochs=1, batch_size=6, progress=False,
        **{"unlearning#method": "none"}, **network)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun is not None, "torchrun (installed with torch) is not on the PATH"
    command = [
        torchrun, "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", "['configs/evaluate.json','configs/multi_gpu_evaluate.json']",
        "--bundle_root", str(tmp_path), "--manifest", str(tiny_preprocessed), "--batch_size", "2",
        "--network_def#channels", "[4,8,8]",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(BUNDLES.parent), os.environ.get("PYTHONPATH", "")])}  # this harmonize
    proc = subprocess.Popen(command, cwd=bundle, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the two-process run took over {TIMEOUT} s:\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    frame = read_manifest(tiny_preprocessed)
    test = frame[frame[Keys.SPLIT] == Split.TEST]
    rows = list(csv.DictReader((tmp_path / "eval" / "evaluate_predictions.csv").read_text().splitlines()))
    assert sorted(r["subject_id"] for r in rows) == sorted(test[Keys.SUBJECT_ID])  # both shards, written once
    truth = dict(zip(test[Keys.SUBJECT_ID], test[Keys.AGE]))
    mae = sum(abs(float(r["predicted_age"]) - truth[r["subject_id"]]) for r in rows) / len(rows)
    metrics = dict(line.split(",") for line in (tmp_path / "eval" / "metrics.csv").read_text().splitlines())
    assert float(metrics["mae"]) == pytest.approx(mae, abs=2e-3)  # the metric is synchronised across ranks
