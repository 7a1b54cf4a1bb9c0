"""Catch bundle overrides that name an id the configs do not have.

``python -m monai.bundle run --max_epoch 2`` (for ``max_epochs``) silently *adds* an id called ``max_epoch`` and
trains for the default number of epochs. :func:`check_overrides` rejects such an override, naming it and the ids
it is close to. An override may add a new argument to a component (a dict with ``_target_``), as
``--network_def#dropout 0.1`` does, if the component's callable takes an argument of that name; anything else
must already exist.
"""

from __future__ import annotations

import difflib
import inspect
import os
import pydoc
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from harmonize.errors import ConfigError

__all__ = ["META_PREFIX", "check_overrides", "config_ids"]

#: Ids under this prefix are the metadata's (``_meta_#version``), not the configs'.
META_PREFIX = "_meta_"
#: The separator of nested ids in MONAI 1.6; ``#`` is read as the same.
SEP = "::"
LEGACY_SEP = "#"
#: How many close ids an error names, and how close they must be (difflib ratio).
MAX_SUGGESTIONS = 3
SUGGESTION_CUTOFF = 0.6


def _walk(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        items = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return
    for key, item in items:
        name = f"{prefix}{SEP}{key}" if prefix else key
        yield name, item
        yield from _walk(item, name)


def config_ids(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every id of a (merged) config, nested ones joined with ``::``, mapped to its value."""
    return dict(_walk(config, ""))


def _target_parameters(target: Any) -> list[str] | None:
    """Argument names of a component's ``_target_`` callable (``None``: unknown, or it takes ``**kwargs``)."""
    from monai.bundle.config_item import ComponentLocator

    if not isinstance(target, str):
        return None
    name = target if "." in target else ComponentLocator().get_component_module_name(target)
    if isinstance(name, list):
        name = name[0] if name else None
    if name is None:
        return None
    found = pydoc.locate(name if "." in target else f"{name}.{target}")
    if found is None:
        return None
    try:
        params = inspect.signature(found).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind != inspect.Parameter.VAR_POSITIONAL and p.name != "self"]


def _load(config_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    from monai.bundle import ConfigParser

    files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
    missing = [str(f) for f in files if not os.path.isfile(f)]
    if missing:
        raise ConfigError("Config file(s) not found.", problems=missing)
    parser = ConfigParser()
    parser.read_config(f=[str(f) for f in files])
    return parser.get()


def check_overrides(
    config_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], overrides: Mapping[str, Any]
) -> None:
    """Raise if an override names an id that the merged configs do not define.

    Args:
        config_files: the config file(s) of the run, merged in order as ``monai.bundle run`` merges them.
        overrides: ``{id: value}`` as given on the command line (``#`` or ``::`` between nested ids).

    Raises:
        ConfigError: naming every unknown id with its closest existing ids, e.g.
            ``'max_epoch': did you mean 'max_epochs'?``.
    """
    ids = config_ids(_load(config_files))
    problems = []
    for key, value in overrides.items():
        name = str(key).replace(LEGACY_SEP, SEP)
        if name.startswith(META_PREFIX):
            continue
        if name in ids:
            wrong = _type_problem(ids[name], value)
            if wrong:
                problems.append(f"'{key}': {wrong}")
            continue
        parent, _, leaf = name.rpartition(SEP)
        candidates = list(ids)
        if parent in ids and isinstance(ids[parent], Mapping) and "_target_" in ids[parent]:
            allowed = _target_parameters(ids[parent]["_target_"])
            if allowed is None or leaf in allowed:
                continue  # a new argument of a component
            candidates = [f"{parent}{SEP}{a}" for a in allowed]
        close = difflib.get_close_matches(name, candidates, n=MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF)
        if LEGACY_SEP in str(key):
            close = [c.replace(SEP, LEGACY_SEP) for c in close]
        hint = f": did you mean {' or '.join(repr(c) for c in close)}?" if close else ": no id of the configs is close"
        problems.append(f"'{key}'{hint}")
    if problems:
        files = [config_files] if isinstance(config_files, (str, os.PathLike)) else list(config_files)
        raise ConfigError(
            f"{len(problems)} override(s) name ids that {', '.join(map(str, files))} do not define (MONAI would add "
            "them silently and they would change nothing), or give a value of the wrong type. Fix them:",
            problems=problems,
        )


#: Config values whose type an override must keep, by the name used in the message.
_TYPE_NAMES = ((bool, "true or false"), (int, "an integer"), (float, "a number"), (list, "a list"),
               (Mapping, "a mapping (JSON object)"))
#: First characters of a MONAI expression, reference or macro: their type is only known when evaluated.
_EXPRESSION_STARTS = ("$", "@", "%")


def _type_problem(current: Any, value: Any) -> str | None:
    """Why ``value`` cannot replace the config value ``current`` (``None`` when it can).

    An override keeps the type of the value it replaces: ``--max_epochs two`` for ``"max_epochs": 10`` is refused
    (an integer is expected) instead of failing deep inside the training loop. Expressions (``$...``), references
    (``@...``) and ``null`` are not checked, nor are values whose config entry is ``null`` or an expression.
    """
    if value is None or current is None:
        return None
    if isinstance(value, str) and value.startswith(_EXPRESSION_STARTS):
        return None
    if isinstance(current, str):
        return None  # paths, names and expressions: any text (and numbers, which MONAI also takes)
    for kind, described in _TYPE_NAMES:
        if isinstance(current, kind):
            accepted = (int, float) if kind is float else (list, tuple) if kind is list else kind
            if isinstance(value, accepted) and (kind is bool or not isinstance(value, bool)):
                return None
            shown = repr(current) if len(repr(current)) <= 60 else repr(current)[:57] + "..."
            return f"expected {described} (the config's value is {shown}), got {value!r} ({type(value).__name__})"
    return None
