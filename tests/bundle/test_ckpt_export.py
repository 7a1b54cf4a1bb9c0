"""ckpt_export turns each bundle's trained model.pt into TorchScript whose outputs equal the eager network's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, run

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
CASES = {
    "brain_age_unlearning": ({"network_def#channels": [4, 8, 8]}, (2, 1, 32, 32, 32)),
    "tissue_seg_unlearning": ({"network_def#channels": [4, 8, 16]}, (2, 1, 16, 16, 16)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_torchscript_export_gives_the_eager_outputs(name, tiny_cohort, tmp_path):
    bundle, (network, shape) = BUNDLES / name, CASES[name]
    configs = bundle / "configs"
    run(config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"), logging_file=False,
        bundle_root=str(tmp_path), manifest=str(tiny_cohort), max_epochs=1, batch_size=6, progress=False,
        **{"unlearning#method": "none"}, **network)
    exported = tmp_path / "models" / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(tmp_path / "models" / "model.pt"),
                meta_file=str(configs / "metadata.json"), config_file=str(configs / "inference.json"),
                bundle_root=str(tmp_path), **network)  # scripted (MONAI's default)

    parser = ConfigParser()
    parser.read_config(str(configs / "inference.json"))
    for key, value in network.items():
        parser[key] = value
    eager = parser.get_parsed_content("network_def")
    eager.load_state_dict(torch.load(tmp_path / "models" / "model.pt", weights_only=True))
    eager.eval()
    scripted = torch.jit.load(str(exported))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, actual = eager(x), scripted(x)
    assert actual.shape == expected.shape == ((2, 1) if "age" in name else (2, 4, 16, 16, 16))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    extra = {"metadata.json": "", "inference.json": ""}
    torch.jit.load(str(exported), _extra_files=extra)
    embedded = json.loads(extra["metadata.json"])  # the bundle's metadata travels with the model
    assert embedded["version"] == "0.1.0"
    assert embedded["required_packages_version"] == \
        json.loads((configs / "metadata.json").read_text())["required_packages_version"]  # not shrunk by MONAI
    assert "network_def" in json.loads(extra["inference.json"])
