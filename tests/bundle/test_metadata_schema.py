"""verify_metadata on the bundles' metadata.json with MONAI's published schema (shipped, offline); versions agree
with setup.cfg; what MONAI's parser reads; verify_net_in_out."""

from __future__ import annotations

import configparser
import json
import warnings
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, verify_net_in_out
from packaging.requirements import Requirement

import harmonize
from harmonize.bundle import metadata_schema_path, verify_bundle_metadata
from harmonize.bundle.metadata_schema import METADATA_SCHEMA_URL

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
OURS = ["brain_age_unlearning", "tissue_seg_unlearning"]
ALL = [*OURS, "recon_unlearning"]
#: neuroHarmonize 2.4-2.5 declares numpy<2 and pandas<3: the bundles must not ask for more.
NEUROHARMONIZE_BOUNDS = [Requirement("numpy<2"), Requirement("pandas<3")]


def _meta(name: str) -> dict:
    return json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())


def _install_requires() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines() if line.strip()]
    return {Requirement(line).name.lower(): Requirement(line) for line in lines}


def test_the_shipped_schema_is_the_published_one_named_by_every_bundle():
    schema = json.loads(metadata_schema_path().read_text())
    assert metadata_schema_path().name == METADATA_SCHEMA_URL.rsplit("/", 1)[1] == "meta_schema_20240725.json"
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert "required_packages_version" in schema["required"] and "$defs" in schema
    assert {_meta(name)["schema"] for name in ALL} == {METADATA_SCHEMA_URL}


@pytest.mark.parametrize("name", ALL)
def test_metadata_verifies_without_downloading(name):
    verify_bundle_metadata(BUNDLES / name)  # raises on any schema violation; the schema file exists, so no download


@pytest.mark.parametrize("name", ALL)
def test_versions_agree_with_setup_cfg_and_neuroharmonize(name):
    meta, requires = _meta(name), _install_requires()
    packages = {**meta["required_packages_version"], "monai": meta["monai_version"],
                "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    assert meta["required_packages_version"]["harmonize-mri"] == harmonize.__version__
    assert "harmonize" not in meta["required_packages_version"]  # another project's name on the index
    for package, version in packages.items():
        if package.lower() in requires:
            assert requires[package.lower()].specifier.contains(version, prereleases=True), (package, version)
    for bound in NEUROHARMONIZE_BOUNDS:
        if bound.name in packages:
            assert bound.specifier.contains(packages[bound.name]), (bound, packages[bound.name])
    assert "optional_packages_version" not in meta  # MONAI 1.6 would read it as the required list (deprecated name)
    assert meta["eval_metrics"] and all(isinstance(v, (int, float)) for v in meta["eval_metrics"].values())


@pytest.mark.parametrize("name", ALL)
def test_monai_parser_reads_every_required_package(name):
    parser = ConfigParser()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecated id would warn and be renamed
        parser.read_meta(str(BUNDLES / name / "configs" / "metadata.json"))
    required = parser.get_parsed_content("_meta_#required_packages_version")
    assert required == _meta(name)["required_packages_version"] and "harmonize-mri" in required


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.pop("required_packages_version"), "'required_packages_version' is a required property"),
        (lambda m: m.update(version=1), "1 is not of type 'string'"),
        (lambda m: m.update(eval_metrics="good"), "'good' is not of type 'object'"),
        (lambda m: m["network_data_format"].pop("outputs"), "'outputs' is a required property"),
    ],
    ids=["no-required-packages", "bad-version", "eval-metrics-text", "no-outputs"],
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
