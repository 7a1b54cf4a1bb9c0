"""Run a bundle config the way ``python -m monai.bundle run`` does, after checking the overrides' names."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harmonize.bundle.check_overrides import check_overrides
from harmonize.devices import resolve_device
from harmonize.errors import ConfigError, HarmonizeError

__all__ = ["DEFAULT_CONFIG", "RUN_ARGUMENTS", "parse_overrides", "run_bundle", "user_error"]

logger = logging.getLogger(__name__)

#: Arguments of ``monai.bundle.run`` itself: they are not config ids, so they are not checked.
RUN_ARGUMENTS = ("config_file", "meta_file", "logging_file", "run_id", "init_id", "final_id", "tracking", "args_file")
#: Config id of the device; a plain device name given as an override is checked against this machine's devices.
DEVICE_ID = "device"
#: How MONAI names a component it failed to build.
_COMPONENT = re.compile(r"Failed to instantiate component '([^']+)'")
#: Config run when none is named, and the metadata / logging files of a bundle, relative to its folder.
DEFAULT_CONFIG = "configs/train.json"
METADATA_FILE = "configs/metadata.json"
LOGGING_FILE = "configs/logging.conf"


def _value(text: str) -> Any:
    """A command-line value as Python: JSON or a Python literal (``2``, ``null``, ``['a','b']``), else the text."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError):
            continue
    return text


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """``["--max_epochs", "2", "--unlearning#beta=5", "--progress"]`` -> ``{"max_epochs": 2, ...}``.

    A ``--key`` followed by another ``--key`` (or nothing) is ``True``.

    Raises:
        ConfigError: a token that is neither ``--key`` nor the value of the preceding key.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"Expected '--<id> <value>' pairs, got {token!r} (in {' '.join(tokens)!r}).")
        key, eq, text = token[2:].partition("=")
        if eq:
            out[key] = _value(text)
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out[key] = _value(tokens[i + 1])
            i += 1
        else:
            out[key] = True
        i += 1
    return out


def _files(bundle: Path, config_file: str | Sequence[str]) -> list[str]:
    names = _value(config_file) if isinstance(config_file, str) else config_file
    names = [names] if isinstance(names, str) else list(names)
    paths = [Path(n) if Path(n).is_absolute() else bundle / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"Config file(s) not found in bundle {bundle}.", problems=missing)
    return [str(p) for p in paths]


def run_bundle(
    bundle_dir: str | os.PathLike[str],
    overrides: Mapping[str, Any] | Sequence[str] = (),
) -> None:
    """Run a bundle's config(s) with ``monai.bundle.run``, rejecting overrides of ids the configs lack.

    Args:
        bundle_dir: the bundle's folder (holding ``configs/``); ``bundle_root`` defaults to it.
        overrides: ``{id: value}`` or command-line tokens (``["--config_file", "configs/train.json",
            "--max_epochs", "2"]``). ``config_file`` (a path or a list, relative to the bundle; default
            :data:`DEFAULT_CONFIG`), ``meta_file`` and ``logging_file`` are passed to ``monai.bundle.run``;
            every other key overrides the config id of that name.

    Raises:
        HarmonizeError: ``bundle_dir`` is not a bundle.
        ConfigError: a config file that does not exist, or an override naming an unknown id (with close matches).
    """
    from monai.bundle import run

    bundle = Path(bundle_dir).expanduser().absolute()
    if not (bundle / "configs").is_dir():
        raise HarmonizeError(f"{bundle} is not a MONAI bundle: it has no configs/ folder.")
    args = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    files = _files(bundle, args.pop("config_file", DEFAULT_CONFIG))
    args.setdefault("bundle_root", str(bundle))
    args.setdefault("meta_file", str(bundle / METADATA_FILE))
    logging_file = bundle / LOGGING_FILE
    args.setdefault("logging_file", str(logging_file) if logging_file.is_file() else False)
    check_overrides(files, {k: v for k, v in args.items() if k not in RUN_ARGUMENTS})
    if isinstance(args.get(DEVICE_ID), str) and not args[DEVICE_ID].startswith(("$", "@", "%")):
        resolve_device(args[DEVICE_ID], f"--{DEVICE_ID}")
    logger.info("Running %s with %s", ", ".join(files), {k: v for k, v in args.items() if k not in RUN_ARGUMENTS})
    try:
        run(config_file=files, **args)
    except RuntimeError as err:
        cause = user_error(err)
        if cause is None:
            raise
        raise cause from None


def user_error(err: BaseException) -> BaseException | None:
    """The user's or environment's error that MONAI wrapped in ``err``, if any.

    MONAI reports a component that fails to build as ``RuntimeError: Failed to instantiate component ...`` raised
    from the original error (e.g. a :class:`~harmonize.errors.HarmonizeError` naming a missing image), whose message
    then hides among dozens of lines. This follows the explicit causes (``raise ... from``) to a
    ``HarmonizeError``, ``OSError`` or ``MemoryError``, and adds the component that failed to its message.
    """
    components = []
    current: BaseException | None = err
    while current is not None:
        if isinstance(current, HarmonizeError):
            if not components:
                return current
            message = f"{current.message} (while building the bundle's {components[-1]})"
            try:
                return type(current)(message, problems=current.problems)
            except TypeError:  # a subclass with another signature
                return HarmonizeError(message, problems=current.problems)
        if isinstance(current, (OSError, MemoryError)):
            return current
        found = _COMPONENT.search(str(current))
        if found:
            components.append(f"'{found.group(1)}'")
        current = current.__cause__
    return None
