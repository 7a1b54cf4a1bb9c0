"""multi_gpu_train.json: two CPU processes under torchrun (gloo backend, DDP, site-balanced shards), one epoch,
against one process with the global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import run

from .conftest import run_torchrun

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
#: What makes two processes train what one process trains with their global batch: no batch statistics (instance
#: norm, no standardisation at the heads' input), no random augmentation or dropout (docs/scale.md).
EXACT = {"network_def#norm": "instance", "unlearning#head_standardize": False, "unlearning#head_dropout": 0.0,
         "augment": False}
#: Largest absolute difference allowed between the two runs' weights (float sums in another order; measured
#: 4.5e-8 on the network and 8.2e-8 on the heads after 4 epochs, docs/scale.md).
TOLERANCE = 1e-5


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("name, channels", [("brain_age_unlearning", "[4,8,8]")])
def test_two_process_cpu_training(name, channels, tiny_preprocessed, tmp_path):
    bundle = BUNDLES / name
    common = {"max_epochs": 1, "progress": False, "unlearning#warmup_epochs": 0, "val_interval": 1,
              "network_def#channels": json.loads(channels),
              "taps": ["encoder.block2", "encoder"], **EXACT}  # the tiny network's last block
    run_torchrun([
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        "--bundle_root", str(tmp_path), "--manifest", str(tiny_preprocessed), "--batch_size", "3",
        *[a for k, v in common.items() for a in (f"--{k}", v if isinstance(v, str) else repr(v))],  # fire: False
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

    # one process, with the global batch (2 x 3): the same network and heads
    one = tmp_path / "one"
    run(config_file=str(bundle / "configs" / "train.json"), logging_file=False, bundle_root=str(one),
        manifest=str(tiny_preprocessed), batch_size=6, **common)
    assert _max_difference(state, torch.load(one / "models" / "model.pt", weights_only=True)) < TOLERANCE
    single = torch.load(next((one / "eval" / "checkpoints").glob("*.pt")), weights_only=False)
    assert _max_difference(full["unlearning"]["heads"], single["unlearning"]["heads"]) < TOLERANCE
    assert history[0]["task_loss"] == pytest.approx(single["unlearning"]["history"][0]["task_loss"], abs=1e-6)
