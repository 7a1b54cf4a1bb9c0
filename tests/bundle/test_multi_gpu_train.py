"""multi_gpu_train.json: two CPU processes under torchrun (gloo backend, DistributedSampler, DDP), one epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from .conftest import run_torchrun

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


@pytest.mark.slow
@pytest.mark.parametrize("name, channels", [("brain_age_unlearning", "[4,8,8]")])
def test_two_process_cpu_training(name, channels, tiny_preprocessed, tmp_path):
    bundle = BUNDLES / name
    run_torchrun([
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        "--bundle_root", str(tmp_path), "--manifest", str(tiny_preprocessed),
        "--max_epochs", "1", "--batch_size", "3", "--progress", "False",
        "--unlearning#warmup_epochs", "0", "--val_interval", "1", "--network_def#channels", channels,
        "--taps", "['encoder.block2','encoder']",  # the tiny network's last block
    ], cwd=bundle)
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
