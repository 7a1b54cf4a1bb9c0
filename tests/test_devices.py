"""resolve_device: one check of --device for every command, naming the option and the devices available."""

from __future__ import annotations

import pytest
import torch

from harmonize import devices
from harmonize.cli.main import main
from harmonize.errors import ConfigError


def test_the_cpu_is_always_there():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device(None) == torch.device("cpu")
    assert devices.available_devices()[0] == "cpu"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("banana", "Argument '--device': 'banana' is not a device name; this machine has: cpu"),
        ("cuda", "Argument '--device': 'cuda' is not available: this PyTorch"),
        ("cuda:7", "Argument '--device': 'cuda:7' is not available"),
    ],
)
def test_a_device_this_machine_lacks_is_named(monkeypatch, name, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match=expected.replace("(", "\\(")):
        devices.resolve_device(name, "--device")


def test_a_gpu_index_beyond_the_machine_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"'cuda:3' does not exist: this machine has 1 GPU\(s\) \(cuda:0 to cuda:0\)"):
        devices.resolve_device("cuda:3", "--device")


@pytest.mark.parametrize("command", [["compare", "--manifest", "m.csv"], ["audit", "--checkpoint", "c.pt",
                                                                          "--manifest", "m.csv"]])
def test_commands_refuse_a_missing_device_with_exit_1(monkeypatch, tmp_path, capsys, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("banana", "cuda"):
        assert main([*command, "--out", str(tmp_path / "o"), "--device", name]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: Argument '--device': '{name}' is not") and "this machine has: cpu" in err.lower()
        assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
