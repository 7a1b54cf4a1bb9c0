"""multi_gpu_train.json: two CPU processes under torchrun (gloo backend, DistributedSampler, DDP), one epoch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
#: Seconds the two-process run may take before the test fails (it takes about 20 s on 2 shared cores).
TIMEOUT = 240


@pytest.mark.slow
@pytest.mark.parametrize("name, channels", [("brain_age_unlearning", "[4,8,8]")])
def test_two_process_cpu_training(name, channels, tiny_preprocessed, tmp_path):
    bundle = BUNDLES / name
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun is not None, "torchrun (installed with torch) is not on the PATH"
    command = [
        torchrun, "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        "--bundle_root", str(tmp_path), "--manifest", str(tiny_preprocessed),
        "--max_epochs", "1", "--batch_size", "3", "--progress", "False",
        "--unlearning#warmup_epochs", "0", "--val_interval", "1", "--network_def#channels", channels,
        "--taps", "['encoder.block2','encoder']",  # the tiny network's last block
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(BUNDLES.parent), os.environ.get("PYTHONPATH", "")])}  # this harmonize
    # Own process group, so that a hang is ended with torchrun's worker processes, not only torchrun.
    proc = subprocess.Popen(command, cwd=bundle, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the two-process run took over {TIMEOUT} s:\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # the DDP wrapper is not saved
    full = torch.load(next((tmp_path / "eval" / "checkpoints").glob("*.pt")), weights_only=False)
    history = full["unlearning"]["history"]
    assert [h["epoch"] for h in history] == [1.0] and "confusion_loss_site" in history[0]
    # what evaluation and inference read is saved by rank 0, as in single-process training
    sites = json.loads((tmp_path / "models" / "site_index.json").read_text())["categories"]
    assert sites == ["site0", "site1", "site2"]
    assert sorted(json.loads((tmp_path / "models" / "preprocessing.json").read_text())["landmarks"]) == \
        ["site0", "site1", "site2"]
