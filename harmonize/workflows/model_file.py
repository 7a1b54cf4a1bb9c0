"""Save a trained brain-age model to one file and load it back, or load one from a MONAI bundle folder.

:func:`save_model` writes everything needed to audit or reuse a :class:`~harmonize.workflows.brain_age.BrainAgeModel`
into one PyTorch file (written atomically): the run's settings, the network's ``state_dict``, the site index (so
that site 2 means the same scanner at audit time), the tapped layers, the domain heads of an unlearning or DANN run
and the training history. :func:`load_model` rebuilds the network from the settings and checks the weights against
it: a file of another network, another format or a damaged file raises a :class:`~harmonize.errors.HarmonizeError`
that names the file and what does not match. The file holds only tensors and plain values, so it is read with
``torch.load(weights_only=True)`` and runs no pickled code.

:func:`load_bundle_model` reads a MONAI bundle folder instead: it instantiates the config's ``network_def`` with
:class:`monai.bundle.ConfigParser` and loads ``models/model.pt`` (a plain ``state_dict``). A bundle of a tissue
segmenter gives a :class:`~harmonize.workflows.segmentation_audit.SegmentationModel` (with the bundle's
preprocessing transform and training history), any other network a brain-age model.
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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from harmonize import __version__
from harmonize.data.site_index import SITE_INDEX_FILENAME, CategoryIndex
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.handlers import Confound, DomainUnlearningHandler
from harmonize.io import atomic_write, read_json_object
from harmonize.keys import Keys, Method, UnlearningMode
from harmonize.networks import BrainAgeRegressor, DomainHead, TissueSegmenter
from harmonize.networks.state_mismatch import state_mismatches
from harmonize.workflows.brain_age import BrainAgeModel, BrainAgeSettings
from harmonize.workflows.unlearning import UnlearningSettings

if TYPE_CHECKING:
    from harmonize.workflows.segmentation_audit import SegmentationModel

__all__ = [
    "BUNDLE_CONFIGS",
    "BUNDLE_TRANSFORM_ID",
    "BUNDLE_WEIGHTS",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "load_bundle_model",
    "load_model",
    "save_model",
]

logger = logging.getLogger(__name__)

#: Tag of a harmonize brain-age model file, and the version of its layout.
MODEL_FORMAT = "harmonize.brain_age_model"
MODEL_FORMAT_VERSION = 1
#: Network classes a model file can hold, by the name stored in the file.
NETWORKS: dict[str, type[nn.Module]] = {BrainAgeRegressor.__name__: BrainAgeRegressor}
#: Bundle configs read by :func:`load_bundle_model`, in order of preference (relative to the bundle folder).
BUNDLE_CONFIGS = ("configs/inference.json", "configs/train.json")
#: Weights of a bundle (a plain ``state_dict``), relative to the bundle folder.
BUNDLE_WEIGHTS = "models/model.pt"
#: The training preprocessing a bundle saves beside its weights (:func:`harmonize.bundle.save_preprocessing`).
BUNDLE_PREPROCESSING = "models/preprocessing.json"
#: Config ids read from a bundle.
BUNDLE_NETWORK_ID = "network_def"
BUNDLE_TAPS_ID = "taps"
BUNDLE_ROOT_ID = "bundle_root"
BUNDLE_MANIFEST_ID = "manifest"
#: Ids that may name the training method (the first found is used).
BUNDLE_METHOD_IDS = ("method", "unlearning#method")
#: Config id of the bundle's preprocessing transform (a MONAI dictionary transform applied after loading).
BUNDLE_TRANSFORM_ID = "transforms"
#: Config id of the bundle's output folder; MONAI's CheckpointSaver of ``train.json`` keeps the full training state
#: (network, optimizer, unlearning handler with its history) in its ``checkpoints`` subfolder.
BUNDLE_OUTPUT_ID = "output_dir"
BUNDLE_CHECKPOINTS_DIR = "checkpoints"
#: Entry of the unlearning handler in a bundle's training checkpoint.
BUNDLE_UNLEARNING_ENTRY = "unlearning"
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


def _head_spec(confound: Confound) -> dict[str, Any]:
    """What rebuilds a confound's domain head: its constructor arguments, weights and loss settings."""
    head = confound.head
    if not isinstance(head, DomainHead):
        raise ConfigError(
            f"save_model: the head of confound '{confound.name}' is a {type(head).__name__}; model files hold "
            "DomainHead heads only."
        )
    layers = dict(head.layers.named_children())
    hidden = [m.out_features for name, m in layers.items() if name.startswith("fc")]
    dropout = next((m.p for name, m in layers.items() if name.startswith("drop")), 0.0)
    norm = layers["norm"]
    return {
        "name": confound.name,
        "key": confound.key,
        "kind": confound.kind,
        "num_classes": confound.num_classes,
        "bin_edges": None if confound.bin_edges is None else [float(e) for e in confound.bin_edges],
        "beta": None if callable(confound.beta) else float(confound.beta),
        "alpha": float(confound.alpha),
        "class_weights": None if confound.class_weights is None else [float(w) for w in confound.class_weights],
        "in_features": head.in_features,
        "hidden": hidden,
        "dropout": float(dropout),
        "standardize_input": isinstance(norm, nn.BatchNorm1d),
        "normalize_input": isinstance(norm, nn.LayerNorm),
        "state_dict": head.state_dict(),
    }


def save_model(model: BrainAgeModel, path: str | os.PathLike) -> Path:
    """Write a trained brain-age model to ``path`` atomically (see the module docstring for what it holds).

    Args:
        model: the model returned by :func:`~harmonize.workflows.brain_age.train_brain_age`.
        path: the file to write (conventionally ``<name>.pt``); its folder is created if needed.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: the network is not one a model file can hold, or a head is not a ``DomainHead``.
    """
    name = type(model.network).__name__
    if name not in NETWORKS:
        raise ConfigError(f"save_model: cannot save a {name}; model files hold {sorted(NETWORKS)} networks.")
    handler = model.handler
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
            "mode": str(handler.mode),
            "head_steps": handler.head_steps,
            "warmup_epochs": handler.warmup_epochs,
            "taps": list(handler.taps.names),
            "heads": [_plain(_head_spec(c)) for c in handler.confounds],
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
    if isinstance(values.get("unlearning"), Mapping):
        known_u = {f.name for f in fields(UnlearningSettings)}
        values["unlearning"] = UnlearningSettings(**{k: v for k, v in values["unlearning"].items() if k in known_u})
    try:
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
    """Rebuild the domain heads and their handler from a model file."""
    confounds = []
    for spec in stored["heads"]:
        head = DomainHead(
            spec["in_features"], spec["num_classes"], hidden=spec["hidden"], dropout=spec["dropout"],
            normalize_input=spec["normalize_input"], standardize_input=spec["standardize_input"],
        )
        _load_weights(head, spec["state_dict"], path, f"the domain head of '{spec['name']}'")
        beta = spec["beta"] if spec["beta"] is not None else settings.unlearning.beta
        confounds.append(Confound(head.to(device), spec["num_classes"], key=spec["key"], name=spec["name"],
                                  kind=spec["kind"], bin_edges=spec["bin_edges"], beta=beta, alpha=spec["alpha"],
                                  class_weights=spec["class_weights"]))
    return DomainUnlearningHandler(network, stored["taps"], confounds, mode=UnlearningMode(stored["mode"]),
                                   head_lr=settings.unlearning.head_lr, head_steps=stored["head_steps"],
                                   warmup_epochs=stored["warmup_epochs"])


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
        raise HarmonizeError(
            f"Model file {str(path)!r} has layout version {content.get('version')!r}; this version of harmonize "
            f"({__version__}) reads version {MODEL_FORMAT_VERSION}."
        )
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


# ------------------------------------------------------------------------------------------------------ bundles
def _bundle_config(bundle: Path) -> Path:
    for name in BUNDLE_CONFIGS:
        if (bundle / name).is_file():
            return bundle / name
    raise HarmonizeError(
        f"{str(bundle)!r} is not a MONAI bundle folder: none of {list(BUNDLE_CONFIGS)} exists in it."
    )


def _bundle_setting(parsers: Sequence[Any], key: str) -> Any:
    """The value of config id ``key`` in the first parser defining it (references and expressions resolved)."""
    for parser in parsers:
        if key in parser:
            value = parser.get(key)
            if isinstance(value, str) and value[:1] in ("$", "@", "%"):
                value = parser.get_parsed_content(key)
            return value
    return None


def _bundle_site_index(bundle: Path, parser: Any, manifest: Any) -> CategoryIndex:
    """The site index of a bundle's model: saved in the bundle, beside its training manifest, or rebuilt.

    Looks, in order, for ``models/site_index.json`` in the bundle, ``site_index.json`` beside the manifest of the
    bundle's ``manifest`` id, the training rows of that manifest, and the training rows of ``manifest``.
    """
    from harmonize.data.manifest import read_manifest

    saved = bundle / "models" / SITE_INDEX_FILENAME
    if saved.is_file():
        return CategoryIndex.load(saved)
    sources = []
    if BUNDLE_MANIFEST_ID in parser:
        try:
            value = parser.get_parsed_content(BUNDLE_MANIFEST_ID)
            if value:
                sources.append(Path(str(value)))
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            logger.info("Bundle %s: its '%s' id cannot be resolved (%s).", bundle, BUNDLE_MANIFEST_ID, err)
    for source in sources:
        if (source.parent / SITE_INDEX_FILENAME).is_file():
            return CategoryIndex.load(source.parent / SITE_INDEX_FILENAME)
        if source.is_file():
            return CategoryIndex.from_frame(read_manifest(source), source=source)
    if manifest is None:
        raise HarmonizeError(
            f"Bundle {str(bundle)!r}: no site index found (models/{SITE_INDEX_FILENAME}, or the manifest of its "
            f"'{BUNDLE_MANIFEST_ID}' id); give the manifest the model was trained on."
        )
    frame = manifest if not isinstance(manifest, (str, os.PathLike)) else read_manifest(manifest)
    logger.info("Bundle %s: site index rebuilt from the training rows of the manifest.", bundle)
    return CategoryIndex.from_frame(frame, source=None if not isinstance(manifest, (str, os.PathLike)) else manifest)


def _bundle_transform(parsers: Sequence[Any], config: Path) -> Any:
    """The bundle's preprocessing transform (its ``transforms`` id, instantiated), or ``None`` if it has none."""
    for parser in parsers:
        if BUNDLE_TRANSFORM_ID in parser:
            try:
                return parser.get_parsed_content(BUNDLE_TRANSFORM_ID, instantiate=True)
            except (RuntimeError, ValueError, TypeError, KeyError, ImportError) as err:
                raise HarmonizeError(
                    f"Bundle config {str(config)!r}: '{BUNDLE_TRANSFORM_ID}' cannot be built: {err}"
                ) from err
    return None


def _bundle_history(parsers: Sequence[Any], bundle: Path) -> list[dict[str, float]]:
    """The per-epoch history of the unlearning handler, from the newest training checkpoint of the bundle.

    ``train.json`` saves ``{"model", "optimizer", "unlearning"}`` into ``<output_dir>/checkpoints``; the history is
    ``unlearning["history"]``. A bundle trained without a domain head, or whose checkpoints are elsewhere, has none.
    """
    folders = []
    for parser in parsers:
        if BUNDLE_OUTPUT_ID in parser:
            try:
                folders.append(Path(str(parser.get_parsed_content(BUNDLE_OUTPUT_ID))) / BUNDLE_CHECKPOINTS_DIR)
            except (RuntimeError, ValueError, TypeError, KeyError) as err:
                logger.info("Bundle %s: its '%s' id cannot be resolved (%s).", bundle, BUNDLE_OUTPUT_ID, err)
    files = sorted({f for folder in folders if folder.is_dir() for f in folder.glob("*.pt")},
                   key=lambda f: f.stat().st_mtime)
    if not files:
        return []
    try:
        state = _read(files[-1], "Bundle training checkpoint")
    except HarmonizeError as err:  # the history only draws the training curves: audit without them
        logger.warning("Bundle %s: no training curves: %s", bundle, err)
        return []
    unlearning = state.get(BUNDLE_UNLEARNING_ENTRY) if isinstance(state, Mapping) else None
    history = unlearning.get("history", []) if isinstance(unlearning, Mapping) else []
    logger.info("Bundle %s: training history of %d epochs read from %s.", bundle, len(history), files[-1])
    return [{str(k): float(v) for k, v in entry.items()} for entry in history]


def _bundle_inputs(bundle: Path) -> dict[str, Any] | None:
    """The training scans' preprocessing a bundle records in ``models/preprocessing.json`` (``None``: none)."""
    from harmonize.workflows.input_check import describe_preprocessing

    path = bundle / BUNDLE_PREPROCESSING
    if not path.is_file():
        logger.info("Bundle %s keeps no %s: its training preprocessing is unknown.", bundle, BUNDLE_PREPROCESSING)
        return None
    inputs = describe_preprocessing(read_json_object(path))
    if inputs is None:
        logger.warning("Bundle %s: %s is not a bundle preprocessing file; the scans' grid and intensities are not "
                       "checked.", bundle, path)
    return inputs


def load_bundle_model(
    bundle_dir: str | os.PathLike, manifest: Any = None, device: str = "cpu"
) -> BrainAgeModel | SegmentationModel:
    """Load the network of a MONAI bundle folder as a model to audit.

    Reads ``configs/inference.json`` (else ``configs/train.json``) with :class:`monai.bundle.ConfigParser`
    (``bundle_root`` set to the folder), instantiates ``network_def``, loads ``models/model.pt`` (a plain
    ``state_dict``, or a MONAI checkpoint holding one under ``network``) and reads the tapped layers from the
    ``taps`` id and the method from ``method`` or ``unlearning#method``, in that config or the bundle's other one
    (default: the network's first tap, e.g. the brain-age encoder, and ``none``).

    Both kinds of model carry the training scans' preprocessing recorded in ``models/preprocessing.json``
    (``inputs``, which the audit checks the scans against) and the bundle's ``transforms`` (the scans are audited as they were trained on, e.g.
    intensity-normalised). A :class:`~harmonize.networks.TissueSegmenter` gives a
    :class:`~harmonize.workflows.segmentation_audit.SegmentationModel`, which also carries the unlearning history
    of its newest training checkpoint (``<output_dir>/checkpoints/*.pt``), when there is one.

    Args:
        bundle_dir: the bundle folder.
        manifest: the manifest (path or frame) whose training rows give the site index when the bundle keeps
            none (see :func:`_bundle_site_index`).
        device: where to put the network.

    Returns:
        The model. A brain-age model's ``settings`` carry the taps and sizes read from the network, its
        ``history`` is empty; ``seconds`` is NaN (training time unknown) for both kinds.

    Raises:
        HarmonizeError: no config or weights, a config without ``network_def`` or that fails to instantiate,
            or weights that do not fit the network (every mismatch named).
    """
    from monai.bundle import ConfigParser

    from harmonize.workflows.segmentation_audit import SegmentationModel

    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise HarmonizeError(f"Bundle folder {str(bundle)!r} does not exist.")
    config = _bundle_config(bundle)
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
    except (OSError, ValueError) as err:
        raise HarmonizeError(f"Bundle config {str(config)!r} cannot be read: {err}") from err
    parser[BUNDLE_ROOT_ID] = str(bundle.absolute())
    if BUNDLE_NETWORK_ID not in parser:
        raise HarmonizeError(
            f"Bundle config {str(config)!r} has no '{BUNDLE_NETWORK_ID}' id (ids: {sorted(parser.get())[:MAX_LISTED]})."
        )
    try:
        network = parser.get_parsed_content(BUNDLE_NETWORK_ID, instantiate=True)
    except (RuntimeError, ValueError, TypeError, KeyError, ImportError) as err:
        raise HarmonizeError(f"Bundle config {str(config)!r}: '{BUNDLE_NETWORK_ID}' cannot be built: {err}") from err
    if not isinstance(network, nn.Module):
        raise HarmonizeError(
            f"Bundle config {str(config)!r}: '{BUNDLE_NETWORK_ID}' gives a {type(network).__name__}, not a network."
        )
    weights = bundle / BUNDLE_WEIGHTS
    state = _read(weights, "Bundle weights")
    if isinstance(state, Mapping) and not _is_state_dict(state) and _is_state_dict(state.get("network")):
        state = state["network"]
    if not _is_state_dict(state):
        raise HarmonizeError(f"Bundle weights {str(weights)!r} are not a state_dict (a mapping of tensors).")
    _load_weights(network, state, weights, f"the network of '{BUNDLE_NETWORK_ID}' in {str(config)!r}")
    parsers = [parser]  # the taps and method may be given in another config of the bundle (train.json)
    for name in BUNDLE_CONFIGS:
        if bundle / name != config and (bundle / name).is_file():
            other = ConfigParser()
            other.read_config(str(bundle / name))
            other[BUNDLE_ROOT_ID] = str(bundle.absolute())
            parsers.append(other)
    default_taps = tuple(getattr(network, "TAPS", {"encoder": "encoder"}).values())[:1]
    taps = _bundle_setting(parsers, BUNDLE_TAPS_ID) or default_taps
    taps = (taps,) if isinstance(taps, str) else tuple(str(t) for t in taps)
    method = next((str(m) for m in (_bundle_setting(parsers, k) for k in BUNDLE_METHOD_IDS) if m), Method.NONE)
    method = method if method in (Method.NONE, Method.UNLEARNING, Method.DANN) else Method.NONE
    inputs = _bundle_inputs(bundle)
    if isinstance(network, TissueSegmenter):
        network.to(device).eval()
        model = SegmentationModel(network, _bundle_site_index(bundle, parser, manifest), taps, Method(method),
                                  device=device, transform=_bundle_transform(parsers, config),
                                  history=_bundle_history(parsers, bundle), inputs=inputs)
        logger.info("Loaded bundle %s: %s from %s, taps %s", bundle, type(network).__name__, config.name, list(taps))
        return model
    settings = BrainAgeSettings(
        unlearning=UnlearningSettings(method=method),
        channels=getattr(network, "channels", BrainAgeSettings.channels),
        feature_dim=getattr(network, "feature_dim", BrainAgeSettings.feature_dim),
        taps=taps,
        device=device,
    )
    network.to(device).eval()
    site_index = _bundle_site_index(bundle, parser, manifest)
    logger.info("Loaded bundle %s: %s from %s, taps %s", bundle, type(network).__name__, config.name, list(taps))
    return BrainAgeModel(network, None, settings, site_index, math.nan, [], transform=_bundle_transform(parsers, config),
                         inputs=inputs)
