"""verify_metadata on the bundles' metadata.json with the shipped schema (offline), and verify_net_in_out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import verify_net_in_out

from harmonize.bundle import metadata_schema_path, verify_bundle_metadata

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
OURS = ["brain_age_unlearning", "tissue_seg_unlearning"]


def test_schema_is_shipped_beside_the_module():
    schema = json.loads(metadata_schema_path().read_text())
    assert "network_data_format" in schema["required"] and schema["definitions"]["tensor"]["required"][0] == "type"


@pytest.mark.parametrize("name", OURS)
def test_metadata_verifies_without_downloading(name):
    verify_bundle_metadata(BUNDLES / name)  # raises on any schema violation; the schema file exists, so no download


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.pop("changelog"), "changelog"),
        (lambda m: m.update(version="1.0"), "1.0"),
        (lambda m: m["network_data_format"]["inputs"]["image"].pop("num_channels"), "num_channels"),
    ],
    ids=["no-changelog", "bad-version", "no-num-channels"],
)
def test_broken_metadata_is_rejected(tmp_path, edit, field):
    meta = json.loads((BUNDLES / OURS[0] / "configs" / "metadata.json").read_text())
    edit(meta)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=field):
        verify_bundle_metadata(tmp_path)


def test_missing_metadata_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        verify_bundle_metadata(tmp_path)


@pytest.mark.parametrize("name", OURS)
def test_network_matches_its_declared_inputs_and_outputs(name):
    configs = BUNDLES / name / "configs"
    verify_net_in_out(net_id="network_def", meta_file=str(configs / "metadata.json"),
                      config_file=str(configs / "inference.json"), device="cpu")
