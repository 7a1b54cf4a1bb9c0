"""Load the network of a MONAI bundle folder as a model to audit.

:func:`load_bundle_model` instantiates the config's ``network_def`` with :class:`monai.bundle.ConfigParser` and
loads ``models/model.pt`` (a plain ``state_dict``). A bundle of a tissue segmenter gives a
:class:`~harmonize.workflows.segmentation_audit.SegmentationModel` (with the bundle's preprocessing transform and
training history), any other network a brain-age model. Harmonize's own model files are read by
:func:`~harmonize.workflows.model_file.load_model`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from harmonize.data.site_index import SITE_INDEX_FILENAME, CategoryIndex
from harmonize.errors import HarmonizeError
from harmonize.keys import Method
from harmonize.networks import TissueSegmenter
from harmonize.workflows.brain_age import BrainAgeModel, BrainAgeSettings
from harmonize.workflows.model_file import (
    BUNDLE_WEIGHTS,
    MAX_LISTED,
    _is_state_dict,
    _load_weights,
    _read,
)
from harmonize.workflows.unlearning import UnlearningSettings

if TYPE_CHECKING:
    from harmonize.workflows.models import SegmentationModel

__all__ = ["BUNDLE_CONFIGS", "BUNDLE_TRANSFORM_ID", "BUNDLE_WEIGHTS", "load_bundle_model"]

logger = logging.getLogger(__name__)

#: Bundle configs read by :func:`load_bundle_model`, in order of preference (relative to the bundle folder).
BUNDLE_CONFIGS = ("configs/inference.json", "configs/train.json")
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
    from harmonize.io import read_json_object
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

    from harmonize.workflows.models import SegmentationModel

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
