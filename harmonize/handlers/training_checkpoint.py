"""Atomic training checkpoints with exact resume, as a MONAI engine handler.

:class:`TrainingCheckpoint` writes everything a training run needs to continue into ONE file per checkpoint:
the network, the trainer's optimizer (and AMP scaler), any further stateful objects (the
:class:`~harmonize.handlers.DomainUnlearningHandler` with its heads and their optimizers, LR schedulers), the
engine's epoch and iteration, the random states (torch, CUDA, numpy, python ``random``) and the data loader's
sampler position and generator. Each file is written through :func:`harmonize.io.atomic_write` (a temporary
file beside it, flushed to disk, then ``os.replace``), so a run killed at any moment leaves either the previous
checkpoints or a complete new one, never a half-written file; only the last ``keep_last`` are kept.

:meth:`TrainingCheckpoint.resume` restores a checkpoint into a freshly built trainer. With the data loaders of
:func:`harmonize.data.dataset.make_dataloader`, whose batch order is a pure function of ``(seed, epoch)`` and which can
start an epoch at a given batch, a run killed mid-epoch and resumed ends, on CPU with a fixed seed, with
weights bit-identical to an uninterrupted run (tested with a real ``SIGKILL`` in
``tests/handlers/test_training_checkpoint.py``).

Example::

    trainer = SupervisedTrainer(...)
    unlearn.attach(trainer)
    checkpoint = TrainingCheckpoint("run/checkpoints", objects={"unlearning": unlearn})
    checkpoint.attach(trainer)            # attach it last: it saves what the other handlers did this epoch
    checkpoint.resume("run/checkpoints")  # after a crash; a no-op (returns None) in an empty folder
    trainer.run()
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from harmonize.data.samplers import epoch_sampler
from harmonize.distributed import is_main_process
from harmonize.errors import ConfigError, HarmonizeError, integer_problem, raise_problems
from harmonize.handlers._engine import require_optimizer
from harmonize.io import TMP_TAG, atomic_write
from harmonize.networks.state_mismatch import state_mismatches

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["CHECKPOINT_SUFFIX", "FORMAT_VERSION", "TrainingCheckpoint"]

logger = logging.getLogger(__name__)

#: Suffix of checkpoint files.
CHECKPOINT_SUFFIX = ".pt"
#: Version of the checkpoint layout (stored in every file; a different version is refused).
FORMAT_VERSION = 1
#: Keys of the checkpoint that are not user objects.
_RESERVED = ("network", "optimizer", "scaler")
#: How many mismatching keys an error message names.
_SHOWN_KEYS = 5


class TrainingCheckpoint:
    """Save a trainer's whole state atomically at every epoch end (and every N iterations), and resume it.

    Args:
        directory: folder of the checkpoint files (created when the first one is written).
        objects: further objects with ``state_dict``/``load_state_dict`` to save, by name, e.g.
            ``{"unlearning": handler, "lr_scheduler": scheduler}``. The engine's ``network``, ``optimizer`` and
            AMP ``scaler`` (MONAI ``SupervisedTrainer``) are saved without being named here.
        keep_last: checkpoints kept in ``directory``; older ones are deleted after each save.
        every_n_iterations: also save every N iterations (mid-epoch; needs a loader from
            :func:`~harmonize.data.dataset.make_dataloader`, which can start an epoch at a given batch).
        prefix: start of the file names, ``<prefix>_epoch0003_iter00000120.pt``.

    Raises:
        ConfigError: ``keep_last`` or ``every_n_iterations`` not an integer >= 1, or a bad ``prefix`` (all named at
            once); an object without ``state_dict``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        objects: Mapping[str, Any] | None = None,
        keep_last: int = 3,
        every_n_iterations: int | None = None,
        prefix: str = "checkpoint",
    ) -> None:
        problems = [integer_problem("keep_last", keep_last)]
        if every_n_iterations is not None and (problem := integer_problem("every_n_iterations", every_n_iterations)):
            problems.append(f"{problem}; or None (checkpoints at the end of each epoch only)")
        if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", prefix):
            problems.append(f"'prefix' must be letters, digits, '_' or '-', got {prefix!r}")
        raise_problems(type(self).__name__, problems)
        self.objects = dict(objects or {})
        for name, obj in self.objects.items():
            if name in _RESERVED:
                raise ConfigError(f"Object name {name!r} is reserved for the engine's own {name}: choose another.")
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise ConfigError(f"Object {name!r} ({type(obj).__name__}) has no state_dict/load_state_dict to save.")
        self.directory = Path(directory).expanduser()
        self.keep_last = keep_last
        self.every_n_iterations = every_n_iterations
        self.prefix = prefix
        self._pattern = re.compile(rf"{re.escape(prefix)}_epoch(\d+)_iter(\d+){re.escape(CHECKPOINT_SUFFIX)}")
        self._engine: Engine | None = None
        self._pending_rng: dict[str, Any] | None = None
        self.last_saved: Path | None = None

    # ----------------------------------------------------------------------------------------------- attach
    def attach(self, engine: Engine) -> None:
        """Register the saving (and the loader's epoch bookkeeping) on the engine's events.

        Attach it after the other handlers, so that an epoch's checkpoint holds what they did at its end.

        Raises:
            ConfigError: the engine has no ``network`` or no optimizer (an evaluator), or mid-epoch checkpoints are asked for with a loader
                that cannot start an epoch at a given batch.
        """
        from ignite.engine import Events

        if not isinstance(getattr(engine, "network", None), nn.Module):
            raise ConfigError("TrainingCheckpoint needs an engine with a `network` (a MONAI SupervisedTrainer).")
        require_optimizer(engine, type(self).__name__)
        if self.every_n_iterations is not None and self._resumable_sampler(engine) is None:
            raise ConfigError(
                "every_n_iterations needs a data loader that can start an epoch at a given batch (one from "
                "harmonize.data.dataset.make_dataloader with shuffle or balance_sites); save at epoch ends only "
                "(every_n_iterations=None) with this loader."
            )
        self._engine = engine
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._restore_pending_rng)
        if self.every_n_iterations is not None:
            every = Events.ITERATION_COMPLETED(every=self.every_n_iterations)
            engine.add_event_handler(every, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    # --------------------------------------------------------------------------------------------- callbacks
    def _epoch_started(self, engine: Engine) -> None:
        """Point the loader's sampler at this epoch (and at the first batch not yet trained on, after a resume)."""
        sampler = self._resumable_sampler(engine)
        epoch = engine.state.epoch - 1
        length = engine.state.epoch_length
        start = engine.state.iteration - epoch * length if length else 0
        if sampler is not None:
            sampler.set_epoch(epoch, start_batch=start)
        elif start:
            logger.warning(
                "Resuming mid-epoch with a loader that restarts each epoch from its first batch: epoch %d will "
                "not see the batches an uninterrupted run would have seen.", engine.state.epoch
            )

    def _iteration_completed(self, engine: Engine) -> None:
        length = engine.state.epoch_length
        if not length or engine.state.iteration % length:  # an epoch's last iteration is saved at the epoch's end
            self.save()

    def _epoch_completed(self, engine: Engine) -> None:
        self.save()

    def _restore_pending_rng(self, engine: Engine) -> None:
        """After a mid-epoch resume, restore the random states once the loader's iterator exists (see resume)."""
        if self._pending_rng is not None:
            rng, self._pending_rng = self._pending_rng, None
            _set_rng_states(rng, self._loader_generators(engine))

    # ---------------------------------------------------------------------------------------------- content
    @staticmethod
    def _loader(engine: Engine) -> Any:
        return getattr(engine, "data_loader", None) or getattr(engine.state, "dataloader", None)

    @classmethod
    def _resumable_sampler(cls, engine: Engine) -> Any:
        """The loader's harmonize sampler (``set_epoch(epoch, start_batch)``), or None."""
        return epoch_sampler(cls._loader(engine))

    @classmethod
    def _loader_generators(cls, engine: Engine) -> dict[str, torch.Generator]:
        """torch generators of the loader and its samplers (a ``RandomSampler``'s order depends on them)."""
        loader = cls._loader(engine)
        found = {
            "loader": getattr(loader, "generator", None),
            "sampler": getattr(getattr(loader, "sampler", None), "generator", None),
            "batch_sampler": getattr(getattr(loader, "batch_sampler", None), "generator", None),
        }
        return {k: g for k, g in found.items() if isinstance(g, torch.Generator)}

    def state_dict(self) -> dict[str, Any]:
        """Everything the run needs to continue (see the module docstring).

        Raises:
            ConfigError: the handler is not attached.
        """
        engine = self._require_engine()
        state = engine.state
        objects = {"network": engine.network.state_dict()}
        if getattr(engine, "optimizer", None) is not None:
            objects["optimizer"] = engine.optimizer.state_dict()
        if getattr(engine, "scaler", None) is not None:
            objects["scaler"] = engine.scaler.state_dict()
        objects.update({name: obj.state_dict() for name, obj in self.objects.items()})
        return {
            "format_version": FORMAT_VERSION,
            "engine": {
                "epoch": int(state.epoch),
                "iteration": int(state.iteration),
                "epoch_length": _optional_int(state.epoch_length),
                "max_epochs": _optional_int(state.max_epochs),
            },
            "objects": objects,
            "rng": _get_rng_states(self._loader_generators(engine)),
        }

    # ------------------------------------------------------------------------------------------------- save
    def checkpoints(self, directory: str | os.PathLike[str] | None = None) -> list[Path]:
        """This handler's checkpoint files in ``directory`` (default: its own), oldest first."""
        folder = Path(directory).expanduser() if directory is not None else self.directory
        if not folder.is_dir():
            return []
        found = [(int(m.group(2)), p) for p in folder.iterdir() if (m := self._pattern.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def save(self) -> Path:
        """Write a checkpoint of the engine's current state now (atomically), then prune old ones.

        Under ``torch.distributed`` only rank 0 writes (the processes hold the same weights); the others check that
        the weights are finite and return the path rank 0 writes.

        Returns:
            The checkpoint's path.

        Raises:
            HarmonizeError: a parameter holds NaN or Inf (training diverged): nothing is written, so the last
                checkpoint stays a good one.
        """
        engine = self._require_engine()
        self._check_finite(engine)
        state = self.state_dict()
        epoch, iteration = state["engine"]["epoch"], state["engine"]["iteration"]
        path = self.directory / f"{self.prefix}_epoch{epoch:04d}_iter{iteration:08d}{CHECKPOINT_SUFFIX}"
        if not is_main_process():
            return path
        atomic_write(path, lambda tmp: _save_synced(state, tmp))
        self.last_saved = path
        for old in self.checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        for stale in self.directory.glob(f".{self.prefix}_*{TMP_TAG}*"):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
        logger.info("Checkpoint of epoch %d, iteration %d: %s", epoch, iteration, path)
        return path

    def _check_finite(self, engine: Engine) -> None:
        modules = {"network": engine.network}
        modules.update({n: o for n, o in self.objects.items() if isinstance(o, nn.Module)})
        modules.update({f"{n}.heads": o.heads for n, o in self.objects.items()  # e.g. DomainUnlearningHandler
                        if isinstance(getattr(o, "heads", None), nn.Module)})
        bad = [f"{name}.{p}" for name, m in modules.items() for p, t in m.state_dict().items()
               if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            last = self.last_saved or (self.checkpoints() or [None])[-1]
            raise HarmonizeError(
                f"Training diverged at epoch {engine.state.epoch}, iteration {engine.state.iteration}: "
                f"{bad[:_SHOWN_KEYS]} hold NaN or Inf, so no checkpoint was written (the last good one is "
                f"{last or 'none'}). Lower the learning rate (or beta) and check the inputs for NaN/Inf voxels "
                "or targets, then resume from the last good checkpoint or retrain."
            )

    # ----------------------------------------------------------------------------------------------- resume
    def latest(self, path_or_dir: str | os.PathLike[str]) -> Path | None:
        """The checkpoint ``resume`` would load: the file itself, or the newest checkpoint in the folder."""
        path = Path(path_or_dir).expanduser()
        if path.is_dir():
            found = self.checkpoints(path)
            return found[-1] if found else None
        return path if path.exists() else None

    def resume(self, path_or_dir: str | os.PathLike[str]) -> Path | None:
        """Restore a checkpoint (a file, or the newest in a folder) into the attached engine and objects.

        Call it after every handler is attached and right before ``engine.run()``. The engine then continues
        from the checkpoint's iteration (mid-epoch too); its ``max_epochs`` stays as set, so a run can be
        extended. When the checkpoint's iteration reaches ``max_epochs``, training is complete: check
        ``engine.state.epoch >= engine.state.max_epochs`` before ``run()``, which would start over.

        Args:
            path_or_dir: a checkpoint file, or a folder of them.

        Returns:
            The loaded file, or None when the folder holds no checkpoint (nothing restored).

        Raises:
            HarmonizeError: the file is missing, unreadable or truncated; it holds a different network (naming the
                first missing, unexpected or mis-shaped keys) or different objects; or the data give a different
                number of iterations per epoch than when it was written.
        """
        engine = self._require_engine()
        path = self.latest(path_or_dir)
        if path is None:
            if Path(path_or_dir).expanduser().is_dir():
                logger.info("No checkpoint in %s: starting from scratch.", path_or_dir)
                return None
            raise HarmonizeError(f"Checkpoint {path_or_dir} does not exist: give a checkpoint file or its folder.")
        state = _load(path)
        self._check_compatible(path, state, engine)
        objects = state["objects"]
        _load_into(path, "network", engine.network, objects["network"])
        if "optimizer" in objects and getattr(engine, "optimizer", None) is not None:
            _load_into(path, "optimizer", engine.optimizer, objects["optimizer"])
        if "scaler" in objects and getattr(engine, "scaler", None) is not None:
            _load_into(path, "scaler", engine.scaler, objects["scaler"])
        for name, obj in self.objects.items():
            _load_into(path, name, obj, objects[name])
        saved = state["engine"]
        length = saved["epoch_length"] or 1
        engine.state.iteration = saved["iteration"]
        engine.state.epoch = saved["iteration"] // length
        if saved["iteration"] % length:
            # The loader's iterator is made (drawing from the random generators) after EPOCH_STARTED; an
            # uninterrupted run drew that before this mid-epoch checkpoint, so restore once it exists.
            self._pending_rng = state["rng"]
        else:
            _set_rng_states(state["rng"], self._loader_generators(engine))
        logger.info("Resumed from %s: epoch %d, iteration %d.", path, saved["epoch"], saved["iteration"])
        return path

    def _check_compatible(self, path: Path, state: Mapping[str, Any], engine: Engine) -> None:
        if state.get("format_version") != FORMAT_VERSION:
            raise HarmonizeError(
                f"{path} has checkpoint format {state.get('format_version')!r}, this version of harmonize reads "
                f"format {FORMAT_VERSION}: resume with the harmonize version that wrote it, or retrain."
            )
        objects = state["objects"]
        missing = sorted(set(self.objects) - set(objects))
        extra = sorted(set(objects) - set(self.objects) - set(_RESERVED))
        if missing or extra:
            raise HarmonizeError(
                f"{path} was written by a different training set-up: it lacks {missing} and holds {extra} that this "
                "run does not have (e.g. unlearning on one side only). Resume with the settings it was written "
                "with, or start in a new checkpoint folder."
            )
        problems = state_mismatches(engine.network.state_dict(), objects["network"], prefix="network")
        for name, obj in self.objects.items():
            problems += state_mismatches(obj.state_dict(), objects[name], prefix=name)
        if problems:
            raise HarmonizeError(
                f"{path} is a checkpoint of a different network: {len(problems)} key(s) do not match this run's "
                "(first ones below). Resume with the network settings it was written with (channels, feature_dim, "
                "taps, confounds, sites), or start in a new checkpoint folder.",
                problems=problems[:_SHOWN_KEYS],
            )
        length = engine.state.epoch_length
        if length is not None and state["engine"]["epoch_length"] != length:
            raise HarmonizeError(
                f"{path} was written with {state['engine']['epoch_length']} iterations per epoch, but the data now "
                f"give {length}: the training data or batch size changed. Resume with the same manifest and batch "
                "size, or start in a new checkpoint folder."
            )

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise ConfigError("TrainingCheckpoint is not attached: call attach(trainer) first.")
        return self._engine


# ---------------------------------------------------------------------------------------------------- helpers
def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _save_synced(state: Mapping[str, Any], tmp: Path) -> None:
    """``torch.save`` into ``tmp`` and flush it to disk before it replaces the target."""
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def _load(path: Path) -> dict[str, Any]:
    """Read a checkpoint (tensors and plain containers only: ``weights_only``), or say why it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise HarmonizeError(
            f"Cannot read checkpoint {path}: {err}. It is truncated or not a harmonize checkpoint (files are written "
            "atomically, so a killed run does not leave one half-written): delete it to resume from the previous "
            "checkpoint in its folder, or give another file."
        ) from None
    if not isinstance(state, dict) or "objects" not in state or "engine" not in state:
        raise HarmonizeError(f"{path} is not a harmonize training checkpoint (no 'objects'/'engine' entries).")
    return state


def _load_into(path: Path, name: str, obj: Any, state: Any) -> None:
    try:
        obj.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise HarmonizeError(
            f"Cannot restore {name!r} from {path}: {err}. The checkpoint was written by a different set-up: resume "
            "with the settings it was written with, or start in a new checkpoint folder."
        ) from None


def _get_rng_states(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """The global random states (as tensors and plain values, loadable with ``weights_only``)."""
    numpy_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": [version, list(internal), gauss],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def _set_rng_states(rng: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, state in rng["generators"].items():
        if name in generators:
            generators[name].set_state(state)
