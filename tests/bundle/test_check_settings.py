"""check_settings: a bundle's numeric ids, checked when the config starts, however it is run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from monai.bundle import run

from harmonize.bundle import check_settings, install_error_hook
from harmonize.errors import ConfigError

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def test_valid_settings_pass_and_every_wrong_one_is_named():
    check_settings({"max_epochs": 2, "batch_size": 8}, {"seed": 0}, {"learning_rate": 1e-3})
    with pytest.raises(ConfigError) as err:
        check_settings({"max_epochs": "two", "batch_size": 0, "val_interval": True}, {"seed": -1},
                       {"learning_rate": float("nan")})
    assert err.value.message == "5 bundle setting(s) are not valid. Fix the override(s):"
    assert err.value.problems == [
        "'max_epochs' must be an integer >= 1, got 'two' (str); e.g. --max_epochs 2",
        "'batch_size' must be an integer >= 1, got 0 (int); e.g. --batch_size 2",
        "'val_interval' must be an integer >= 1, got True (bool); e.g. --val_interval 2",
        "'seed' must be an integer >= 0, got -1 (int); e.g. --seed 0",
        "'learning_rate' must be a finite number > 0, got nan (float); e.g. --learning_rate 0.001",
    ]


@pytest.mark.parametrize("bundle", ["brain_age_unlearning", "tissue_seg_unlearning", "recon_unlearning"])
def test_a_wrong_override_of_monai_bundle_run_is_one_error_paragraph(bundle, tmp_path, capsys, monkeypatch):
    """``python -m monai.bundle run --max_epochs two``: before, a TypeError traceback from inside the training loop."""
    configs = BUNDLES / bundle / "configs"
    with pytest.raises(RuntimeError) as caught:  # what `python -m monai.bundle run` would leave uncaught
        run(config_file=str(configs / "train.json"), logging_file=False, bundle_root=str(tmp_path), max_epochs="two")
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)  # restored after the test
    install_error_hook()  # train.json installs it first in its `initialize`
    sys.excepthook(caught.type, caught.value, caught.tb)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == ["error: 1 bundle setting(s) are not valid. Fix the override(s):",
                                "  - 'max_epochs' must be an integer >= 1, got 'two' (str); e.g. --max_epochs 2"]
    assert not (tmp_path / "models").exists()  # refused before any work
