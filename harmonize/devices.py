"""Check a device the user asked for (``--device``, a settings field) against the devices this machine has.

:func:`resolve_device` is the one check used by every command and workflow that takes a device: ``cuda`` on a
machine without CUDA, ``cuda:3`` on a machine with one GPU, or ``banana`` raise a
:class:`~harmonize.errors.ConfigError` that names the option and lists the devices available, instead of
PyTorch's assertion deep inside the first ``.to(device)``.
"""

from __future__ import annotations

import torch

from harmonize.errors import ConfigError

__all__ = ["available_devices", "resolve_device"]


def available_devices() -> list[str]:
    """The devices of this machine: ``cpu``, then ``cuda:0``... and ``mps`` where present."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is built without CUDA"
    return "no NVIDIA GPU or driver is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"


def resolve_device(device: str | torch.device | None, option: str = "device") -> torch.device:
    """The device ``device`` names, checked to exist on this machine (``None``: the CPU).

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a :class:`torch.device`.
        option: the option or setting that gave it, for the message (``"--device"``).

    Raises:
        ConfigError: the name is not a device, or the device is absent; the message lists the devices available.
    """
    if device is None:
        return torch.device("cpu")
    here = ", ".join(available_devices())
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"Argument '{option}': {str(device)!r} is not a device name; this machine has: {here} "
            "(names are cpu, cuda, cuda:N or mps)."
        ) from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Argument '{option}': {str(device)!r} is not available: {_why_no_cuda()}. This machine has: {here}. "
                f"Pass {option} cpu, or run on a machine with a GPU."
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(
                f"Argument '{option}': {str(device)!r} does not exist: this machine has {count} GPU(s) "
                f"(cuda:0 to cuda:{count - 1}). Devices: {here}."
            )
        return parsed
    if parsed.type == "mps" and "mps" in here:
        return parsed
    raise ConfigError(f"Argument '{option}': {str(device)!r} is not available on this machine; it has: {here}.")
