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
