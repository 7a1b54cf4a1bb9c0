"""Save a trained brain-age model to one file and load it back, or load one from a MONAI bundle folder.

:func:`save_model` writes everything needed to audit or reuse a :class:`~harmonize.workflows.brain_age.BrainAgeModel`
into one PyTorch file (written atomically): the run's settings, the network's ``state_dict``, the site index (so
that site 2 means the same scanner at audit time), the tapped layers, the domain heads of an unlearning or DANN run
and the training history. :func:`load_model` rebuilds the network from the settings and checks the weights against
it: a file of another network, another format or a damaged file raises a :class:`~harmonize.errors.HarmonizeError`
that names the file and what does not match. The file holds only tensors and plain values, so it is read with
``torch.load(weights_only=True)`` and runs no pickled code.

A MONAI bundle folder is read by :func:`~harmonize.workflows.bundle_model.load_bundle_model` instead.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harmonize import __version__
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.handlers import DomainUnlearningHandler
from harmonize.io import atomic_write
from harmonize.keys import Keys
from harmonize.networks import BrainAgeRegressor
from harmonize.networks.state_mismatch import state_mismatches
from harmonize.workflows.brain_age import BrainAgeModel, BrainAgeSettings
from harmonize.workflows.unlearning import UnlearningSettings, handler_from_plan

__all__ = ["MODEL_FORMAT", "MODEL_FORMAT_VERSION", "load_model", "save_model"]

logger = logging.getLogger(__name__)

#: Tag of a harmonize brain-age model file, and the version of its layout.
MODEL_FORMAT = "harmonize.brain_age_model"
MODEL_FORMAT_VERSION = 2
#: Network classes a model file can hold, by the name stored in the file.
NETWORKS: dict[str, type[nn.Module]] = {BrainAgeRegressor.__name__: BrainAgeRegressor}
#: Weights of a MONAI bundle (a plain ``state_dict``), relative to the bundle folder.
BUNDLE_WEIGHTS = "models/model.pt"
#: Problems named at most in one error message.
MAX_LISTED = 12
#: What a file that is not a model file (or is damaged) raises when read.
_READ_ERRORS = (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                struct.error, pickle.UnpicklingError, zipfile.BadZipFile)
#: First bytes of a PyTorch file: a zip archive (torch.save since 1.6) or a pickle (protocol 2 or later).
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


# ------------------------------------------------------------------------------------------------------ saving
def _plain(value: Any) -> Any:
    """``value`` as plain Python values and CPU tensors (what ``torch.load(weights_only=True)`` accepts)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (list, Sequence)):
        return [_plain(v) for v in value]
    raise ConfigError(f"save_model: cannot store a value of type {type(value).__name__} ({value!r}) in a model file.")


def save_model(model: BrainAgeModel, path: str | os.PathLike) -> Path:
    """Write a trained brain-age model to ``path`` atomically (see the module docstring for what it holds).

    Args:
        model: the model returned by :func:`~harmonize.workflows.brain_age.train_brain_age`.
        path: the file to write (conventionally ``<name>.pt``); its folder is created if needed.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: the network is not one a model file can hold, or the handler was not built by
            :func:`~harmonize.workflows.unlearning.build_unlearning_handler` (it has no ``plan``).
    """
    name = type(model.network).__name__
    if name not in NETWORKS:
        raise ConfigError(f"save_model: cannot save a {name}; model files hold {sorted(NETWORKS)} networks.")
    handler = model.handler
    if handler is not None and getattr(handler, "plan", None) is None:
        raise ConfigError("save_model: the model's unlearning handler was not built by build_unlearning_handler, so "
                          "its plan (classes, bins, prior, mask) is unknown; build it through that function.")
    content = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "harmonize_version": __version__,
        "network_class": name,
        "settings": _plain(model.settings.to_dict()),
        "site_index": {"name": model.site_index.name, "categories": list(model.site_index.categories)},
        "taps": list(model.settings.taps),
        "network": _plain(model.network.state_dict()),
        "handler": None if handler is None else {
            "taps": list(handler.taps.names),
            "feature_dim": int(handler.confounds[0].head.in_features),
            "plan": _plain(handler.plan.to_dict()),
            "head_configs": {c.name: _plain(getattr(c.head, "config", None)) for c in handler.confounds},
            "heads": _plain(handler.heads.state_dict()),
        },
        "history": _plain(model.history),
        "seconds": float(model.seconds),
        "inputs": _plain(model.inputs),
    }
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(content, tmp))
    logger.info("Saved the %s model (%s) to %s", model.settings.unlearning.method, name, path)
    return path


# ----------------------------------------------------------------------------------------------------- loading
def _read(path: Path, what: str) -> Any:
    if not path.is_file():
        raise HarmonizeError(f"{what} {str(path)!r} does not exist.")
    with open(path, "rb") as stream:
        head = stream.read(16)
    if not head.startswith(_TORCH_MAGIC):
        size = path.stat().st_size
        raise HarmonizeError(
            f"{what} {str(path)!r} is not a PyTorch file: it is {size} byte(s) long and starts with {head!r} "
            "(a PyTorch file starts with a zip or pickle header). Give the .pt file written by harmonize compare or "
            "save_model (or a bundle's models/model.pt)."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as err:
        raise HarmonizeError(
            f"{what} {str(path)!r} cannot be read as a PyTorch file: it is damaged, truncated or of another kind "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'})."
        ) from err


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _weight_problems(network: nn.Module, state: Mapping[str, Any]) -> list[str]:
    """Every way ``state`` does not fit ``network`` (at most :data:`MAX_LISTED` lines)."""
    problems = state_mismatches(network.state_dict(), state, source="file")
    problems += [f"{k!r} is a {type(v).__name__}, not a tensor" for k, v in state.items() if not torch.is_tensor(v)]
    if len(problems) > MAX_LISTED:
        problems = problems[:MAX_LISTED] + [f"... and {len(problems) - MAX_LISTED} more"]
    return problems


def _load_weights(network: nn.Module, state: Mapping[str, Any], path: Path, described: str) -> None:
    """Load ``state`` into ``network`` or raise, naming the file and every mismatch."""
    problems = _weight_problems(network, state)
    if problems:
        raise HarmonizeError(
            f"The weights in {str(path)!r} do not fit {described}: the file holds another network (or another "
            "size of it). Load the file with the settings it was trained with.",
            problems=problems,
        )
    network.load_state_dict(state)


def _settings(stored: Mapping[str, Any], path: Path) -> BrainAgeSettings:
    """Settings from a file, ignoring (with a warning) fields this version does not know."""
    known = {f.name for f in fields(BrainAgeSettings)}
    unknown = sorted(set(stored) - known)
    if unknown:
        logger.warning("Model file %s: ignoring settings %s unknown to this version of harmonize.", path, unknown)
    values = {k: v for k, v in stored.items() if k in known}
    try:
        if isinstance(values.get("unlearning"), Mapping):
            known_u = {f.name for f in fields(UnlearningSettings)}
            values["unlearning"] = UnlearningSettings(**{k: v for k, v in values["unlearning"].items() if k in known_u})
        return BrainAgeSettings(**values)
    except (TypeError, ValueError) as err:
        raise HarmonizeError(f"Model file {str(path)!r} holds settings this version cannot use: {err}") from err


def _device(requested: str | None, saved: str) -> str:
    from harmonize.devices import resolve_device

    if requested is not None:
        return str(resolve_device(requested, "device"))
    device = saved
    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.info("CUDA is not available: loading the model on the CPU.")
        return "cpu"
    return device


def _handler(network: nn.Module, stored: Mapping[str, Any], settings: BrainAgeSettings, path: Path,
             device: str) -> DomainUnlearningHandler:
    """Rebuild the handler through the training builder, from the saved settings and plan, then load its heads."""
    try:
        handler = handler_from_plan(network, stored["taps"], int(stored["feature_dim"]), settings.unlearning,
                                    dict(stored["plan"]))
    except (KeyError, TypeError) as err:
        raise HarmonizeError(f"Model file {str(path)!r}: its unlearning handler entry is incomplete ({err}).") from err
    problems = [f"head '{c.name}': saved {stored['head_configs'].get(c.name)}, rebuilt {c.head.config}"
                for c in handler.confounds if stored.get("head_configs", {}).get(c.name) != _plain(c.head.config)]
    if problems:
        raise HarmonizeError(f"Model file {str(path)!r}: its settings rebuild other domain heads than it holds.",
                             problems=problems)
    _load_weights(handler.heads, stored["heads"], path, "the domain heads its settings describe")
    handler.heads.to(device)
    return handler


def _version_message(path: Path, content: Mapping[str, Any]) -> str:
    """Why a model file of another layout version is refused, and what to do instead."""
    version, writer = content.get("version"), content.get("harmonize_version", "an unknown version")
    message = (f"Model file {str(path)!r} has layout version {version!r}; this version of harmonize ({__version__}) "
               f"reads version {MODEL_FORMAT_VERSION}. The file was written by harmonize {writer}.")
    if isinstance(version, int) and version < MODEL_FORMAT_VERSION:
        return (f"{message} A version {version} file does not record what its domain heads were built from (the "
                "confound bins, the site prior and the sample mask), so no converter can rebuild its handler "
                "faithfully: train the model again with this version (harmonize compare, or train_brain_age then "
                f"save_model), or read the file with harmonize {writer}.")
    return f"{message} Read it with that version, or upgrade harmonize."


def load_model(path: str | os.PathLike, device: str | None = None) -> BrainAgeModel:
    """Read a model written by :func:`save_model`.

    Args:
        path: the model file.
        device: where to put the network (default: the device it was trained on, or the CPU when that is a
            GPU this machine lacks).

    Returns:
        The model, in eval mode, with its settings, site index, heads (if any) and history.

    Raises:
        HarmonizeError: the file is missing, damaged, not a harmonize model file (e.g. a plain ``state_dict``),
            of another format version or network class, or its weights do not fit the network its settings
            describe; the message names the file and every mismatch.
    """
    path = Path(path)
    content = _read(path, "Model file")
    if not isinstance(content, Mapping) or content.get("format") != MODEL_FORMAT:
        if _is_state_dict(content):
            raise HarmonizeError(
                f"{str(path)!r} holds a plain state_dict ({len(content)} tensors), not a harmonize model file: it "
                "carries no settings or site index. Audit it as a MONAI bundle (--bundle DIR, with the weights in "
                f"DIR/{BUNDLE_WEIGHTS}), or save the model with harmonize.workflows.model_file.save_model."
            )
        keys = sorted(content)[:MAX_LISTED] if isinstance(content, Mapping) else type(content).__name__
        raise HarmonizeError(
            f"{str(path)!r} is not a harmonize model file (no format tag {MODEL_FORMAT!r}; it holds {keys}). "
            "Model files are written by save_model, e.g. OUT/models/<method>.pt of harmonize compare."
        )
    if content.get("version") != MODEL_FORMAT_VERSION:
        raise HarmonizeError(_version_message(path, content))
    missing = [k for k in ("network_class", "settings", "site_index", "network") if k not in content]
    if missing:
        raise HarmonizeError(f"Model file {str(path)!r} is incomplete: entries {missing} are missing.")
    cls = NETWORKS.get(content["network_class"])
    if cls is None:
        raise HarmonizeError(
            f"Model file {str(path)!r} holds a {content['network_class']!r} network; this function loads "
            f"{sorted(NETWORKS)}. A tissue segmenter is audited from its MONAI bundle folder (--bundle DIR)."
        )
    settings = _settings(content["settings"], path)
    device = _device(device, settings.device)
    settings.device = device
    network = cls(channels=settings.channels, feature_dim=settings.feature_dim, norm=settings.norm)
    described = f"the {cls.__name__} its settings describe (channels={settings.channels}, " \
                f"feature_dim={settings.feature_dim})"
    _load_weights(network, content["network"], path, described)
    network.to(device).eval()
    stored_index = content["site_index"]
    site_index = CategoryIndex(stored_index["categories"], name=stored_index.get("name", Keys.SITE))
    handler = None if content.get("handler") is None else _handler(network, content["handler"], settings, path, device)
    history = [dict(h) for h in content.get("history", [])]
    if handler is not None:
        handler.history = list(history)
    inputs = content.get("inputs")
    return BrainAgeModel(network, handler, settings, site_index, float(content.get("seconds", math.nan)), history,
                         inputs=dict(inputs) if isinstance(inputs, Mapping) else None)
