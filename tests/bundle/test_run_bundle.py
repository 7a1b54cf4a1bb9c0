"""run_bundle and ``harmonize bundle run``: parse --id value pairs, check them, then run monai.bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harmonize.bundle import parse_overrides, run_bundle
from harmonize.cli.main import main
from harmonize.errors import ConfigError, HarmonizeError

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "brain_age_unlearning"


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (["--max_epochs", "2", "--manifest", "a/b.csv"], {"max_epochs": 2, "manifest": "a/b.csv"}),
        (["--unlearning#beta=0.5", "--progress"], {"unlearning#beta": 0.5, "progress": True}),
        (["--taps", "['encoder']", "--split", "null", "--x", "[1, 2]"], {"taps": ["encoder"], "split": None,
                                                                          "x": [1, 2]}),
        (["--progress", "False", "--flag", "true"], {"progress": False, "flag": True}),
    ],
)
def test_parse_overrides(tokens, expected):
    assert parse_overrides(tokens) == expected


@pytest.mark.parametrize("tokens", [["max_epochs", "2"], ["--max_epochs", "2", "3"], ["--"]])
def test_parse_overrides_rejects_stray_values(tokens):
    with pytest.raises(ConfigError, match="Expected '--<id> <value>' pairs"):
        parse_overrides(tokens)


def test_not_a_bundle(tmp_path):
    with pytest.raises(HarmonizeError, match="is not a MONAI bundle: it has no configs/ folder"):
        run_bundle(tmp_path)


def test_unknown_config_file():
    with pytest.raises(ConfigError, match="Config file") as err:
        run_bundle(BUNDLE, ["--config_file", "configs/nope.json"])
    assert err.value.problems == [str(BUNDLE / "configs" / "nope.json")]


def test_cli_reports_a_misspelt_override(capsys):
    assert main(["bundle", "run", str(BUNDLE), "--config_file", "['configs/train.json','configs/dann.json']",
                 "--max_epoch", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 override(s) name ids that ") and "'max_epoch': did you mean 'max_epochs'?" in err


def test_cli_runs_the_bundle(tiny_cohort, tmp_path):
    assert main(["-q", "bundle", "run", str(BUNDLE), "--bundle_root", str(tmp_path), "--manifest", str(tiny_cohort),
                 "--max_epochs", "1", "--batch_size", "6", "--progress", "false", "--logging_file", "false",
                 "--unlearning#method", "none", "--network_def#channels", "[4,8,8]"]) == 0
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert "age_offset" in state


def test_cli_reports_a_wrong_type_and_a_missing_device_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bundle", "run", str(BUNDLE), "--max_epochs", "two"]) == 1
    err = capsys.readouterr().err
    assert err.endswith("  - 'max_epochs': expected an integer (the config's value is 15), got 'two' (str)\n")
    assert main(["bundle", "run", str(BUNDLE), "--device", "cuda"]) == 1
    assert capsys.readouterr().err.startswith("error: Argument '--device': 'cuda' is not available")


def test_a_harmonize_error_inside_a_component_is_one_line(tmp_path, capsys):
    """A missing image met while MONAI builds the inference dataset: before, its name was buried in 64 lines."""
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    (tmp_path / "bundle" / "configs").symlink_to(BUNDLE / "configs")
    assert main(["bundle", "run", str(tmp_path / "bundle"), "--config_file", "configs/inference.json", "--images",
                 f"['{tmp_path / 'gone.nii.gz'}']", "--logging_file", "false"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    error = err[err.index("error:"):]
    assert error == ("error: 1 of the images given to inference cannot be read. (while building the bundle's "
                     f"'harmonize.bundle.inference_dataset')\n  - {tmp_path / 'gone.nii.gz'}: no such file or folder\n")


def test_user_error_follows_the_causes_only():
    from harmonize.bundle.run_bundle import user_error

    try:
        try:
            raise HarmonizeError("row 3: missing image")
        except HarmonizeError as inner:
            raise RuntimeError("Failed to instantiate component 'train#dataset' with keywords: x") from inner
    except RuntimeError as outer:
        found = user_error(outer)
    assert str(found) == "row 3: missing image (while building the bundle's 'train#dataset')"
    try:
        try:
            raise HarmonizeError("unrelated")
        except HarmonizeError:
            raise RuntimeError("a bug while handling it")  # noqa: B904 - an implicit context, not a cause
    except RuntimeError as outer:
        assert user_error(outer) is None
