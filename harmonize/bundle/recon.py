"""What the reconstruction-unlearning bundle (``bundles/recon_unlearning``) needs beyond the public classes.

The bundle's configs instantiate the network, ``SupervisedTrainer``,
:class:`~harmonize.handlers.MachineUnlearningHandler`, ``CheckpointSaver`` and ``StatsHandler`` themselves and
build the data with :func:`harmonize.workflows.recon_unlearning.build_splits`. This module adds the glue between
the bundle's separate runs (``train.json``, ``oracle.json``, ``unlearn.json``, ``evaluate.json``):

- which stages an unlearning method runs (:func:`method_stages`, :func:`forget_stage`, :func:`has_finetune`),
  read from :data:`harmonize.workflows.machine_unlearning.METHOD_STAGES`;
- the file names of each method's checkpoint and run record (:func:`checkpoint_name`, :func:`record_name`);
- loading the original model's weights with a message that says which config to run first
  (:func:`load_weights`);
- recording a run's wall time and what each stage saw (:func:`write_run_record`), so that ``evaluate.json`` can
  report the time of each method next to its PSNR and SSIM;
- the evaluation data of ``evaluate.json``'s ``SupervisedEvaluator`` (:func:`evaluation_dataset`, or the whole
  evaluator in Python: :func:`unlearning_evaluator`), and the loop that runs it on every saved model
  (:func:`evaluate_checkpoints`);
- the table over seeds of several bundle roots, each trained and evaluated with its own ``--seed``
  (:func:`summarise_seeds`);
- the files ``inference.json`` and ``inference_fastmri.json`` reconstruct and the check that they can start
  (:func:`inference_files`, :func:`check_inference_inputs`).

Xue et al., "Erase to Enhance: Data-Efficient Machine Unlearning in MRI Reconstruction" (MIDL 2024).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from harmonize.errors import ConfigError
from harmonize.handlers.machine_unlearning import MachineUnlearningHandler
from harmonize.handlers.reconstruction_metrics import ReconstructionMetricsHandler
from harmonize.io import write_json_atomic, write_text_atomic
from harmonize.keys import Keys, ReconMethod
from harmonize.metrics.reconstruction import (
    EVAL_BATCH_SIZE,
    EVALUATION_SETS,
    TABLE_COLUMNS,
)
from harmonize.output_dir import OutputDirError, check_replaceable
from harmonize.recon.slices import ReconSplits
from harmonize.workflows.machine_unlearning import (
    METHOD_STAGES,
    PrepareBatchKeys,
    load_model,
)
from harmonize.workflows.recon_unlearning import (
    DEFAULT_METHODS,
    OUTPUT_FILES,
    ReconUnlearningResult,
    format_markdown,
    over_seeds,
)

__all__ = [
    "EVALUATION_ORDER",
    "UNLEARN_METHODS",
    "FASTMRI_SUFFIXES",
    "INFERENCE_SUFFIXES",
    "check_inference_inputs",
    "checkpoint_name",
    "evaluate_checkpoints",
    "evaluation_dataset",
    "forget_stage",
    "has_finetune",
    "inference_files",
    "load_weights",
    "method_stages",
    "read_run_record",
    "record_name",
    "summarise_seeds",
    "unlearning_evaluator",
    "write_run_record",
]

logger = logging.getLogger(__name__)

#: Methods that ``unlearn.json`` runs from the original model (the oracle has its own config).
UNLEARN_METHODS: tuple[ReconMethod, ...] = tuple(
    ReconMethod(m) for m in DEFAULT_METHODS if m != ReconMethod.RETRAIN_SUBSET
)
#: Rows of the evaluation table, in order (methods without a checkpoint are skipped).
EVALUATION_ORDER: tuple[ReconMethod, ...] = (ReconMethod.ORIGINAL, ReconMethod.ORACLE, *UNLEARN_METHODS)
#: File stem of the original model (``models/model.pt``, as in MONAI model-zoo bundles).
ORIGINAL_STEM = "model"
#: Suffix of checkpoints and of run records.
CHECKPOINT_SUFFIX = ".pt"
RECORD_SUFFIX = ".json"
#: Files ``inference.json`` reconstructs when it is given a folder (``dataset_dir``); ``inference_fastmri.json``
#: reads :data:`FASTMRI_SUFFIXES`.
INFERENCE_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
FASTMRI_SUFFIXES: tuple[str, ...] = (".h5",)
#: The name under which ignite stores a run's wall time in ``engine.state.times``.
_COMPLETED = "COMPLETED"


def _method(method: ReconMethod | str, allowed: Sequence[ReconMethod], argument: str = "method") -> ReconMethod:
    value = str(method)
    if value not in {str(m) for m in allowed}:
        raise ConfigError(
            f"Bundle id '{argument}': {value!r} is not one of {[str(m) for m in allowed]}. The original model is "
            "trained by configs/train.json and the oracle by configs/oracle.json; unlearn.json runs the others "
            "(e.g. --method ga_l1_ft)."
        )
    return ReconMethod(value)


def checkpoint_name(method: ReconMethod | str) -> str:
    """File name of a method's weights in the bundle's ``models/``: ``model.pt`` (original), ``model_<m>.pt``."""
    method = _method(method, EVALUATION_ORDER)
    stem = ORIGINAL_STEM if method == ReconMethod.ORIGINAL else f"{ORIGINAL_STEM}_{method}"
    return stem + CHECKPOINT_SUFFIX


def record_name(method: ReconMethod | str) -> str:
    """File name of a method's run record (wall time, stages), beside its checkpoint: ``model_<m>.json``."""
    return Path(checkpoint_name(method)).stem + RECORD_SUFFIX


def method_stages(method: ReconMethod | str) -> tuple[str, ...]:
    """The handler stages of an unlearning method, in order (e.g. ``ga_l1_ft`` -> ``("ga_l1", "ft")``).

    Raises:
        ConfigError: ``method`` is not one of :data:`UNLEARN_METHODS`.
    """
    return tuple(str(stage) for stage in METHOD_STAGES[_method(method, UNLEARN_METHODS)])


def forget_stage(method: ReconMethod | str) -> str | None:
    """The stage of ``method`` that works on the forget set (``ga``, ``ga_l1`` or ``nl``), or ``None`` (``ft``)."""
    return next((stage for stage in method_stages(method) if stage != ReconMethod.FT), None)


def has_finetune(method: ReconMethod | str) -> bool:
    """Whether ``method`` fine-tunes on the retain subset (``ft``, ``ga_l1_ft``, ``nl_ft``)."""
    return str(ReconMethod.FT) in method_stages(method)


def load_weights(network: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict saved by the bundle (``CheckpointSaver``) into ``network`` in place and return it.

    Raises:
        ConfigError: no file at ``path`` (naming the config that writes it), or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"No model weights at {path}. Train the original model first: python -m monai.bundle run "
            "--config_file configs/train.json (with the same bundle_root), or point load_path at a checkpoint."
        )
    return load_model(path, lambda: network)


def _stage_record(trainer: Any, handler: MachineUnlearningHandler | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "stage": str(handler.method) if handler is not None else "train",
        "epochs": int(trainer.state.epoch),
        "iterations": int(trainer.state.iteration),
        "seconds": float(trainer.state.times.get(_COMPLETED) or 0.0),
    }
    if handler is not None:
        record["num_seen"] = dict(handler.num_seen)
        record["num_dropped"] = int(handler.num_dropped)
    return record


def write_run_record(
    path: str | os.PathLike,
    method: ReconMethod | str,
    stages: Iterable[Sequence[Any]],
    **details: Any,
) -> dict[str, Any]:
    """Write (atomically) what a bundle run did: its stages, their wall time, what each stage's handler saw.

    Args:
        path: the JSON file to write (by convention ``models/`` + :func:`record_name`).
        method: the method trained or unlearned (``original``, ``oracle``, ``ga_l1_ft``, ...).
        stages: ``(trainer, handler)`` pairs in the order they ran; a pair whose trainer is ``None`` (a stage the
            method does not have) is skipped, and the handler may be ``None`` (plain training).
        details: further JSON-serialisable settings to record (learning rate, retain fraction, ...).

    Returns:
        The record: ``method``, ``seconds`` (sum over stages, as ignite measured each run), ``stages``, details.
    """
    method = _method(method, EVALUATION_ORDER)
    ran = [_stage_record(trainer, handler) for trainer, handler in stages if trainer is not None]
    record = {"method": str(method), "seconds": sum(s["seconds"] for s in ran), "stages": ran, **details}
    write_json_atomic(path, record, indent=2)
    logger.info("%s: %.1f s over %d stage(s); record written to %s", method, record["seconds"], len(ran), path)
    return record


def read_run_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record written by :func:`write_run_record`, or ``None`` if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"Cannot read the run record {path}: {err}. Delete it or rerun the config that wrote it."
        ) from err


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as strings (as the workflow's JSON table does)."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


class _TaggedSet(Dataset):
    """The samples of one evaluation set, each a shallow copy with its set's name under ``Keys.EVAL_SET``."""

    def __init__(self, samples: Sequence[Mapping[str, Any]], name: str) -> None:
        self.samples, self.name = samples, name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.samples[index], Keys.EVAL_SET: self.name}


def evaluation_dataset(splits: ReconSplits) -> ConcatDataset:
    """The samples ``evaluate.json`` reconstructs: retain-test (``bta``), forget-test (``kta``), forget-train (``ua``).

    Each sample carries its set's name under ``Keys.EVAL_SET``, so that one evaluator run scores the three sets
    (:class:`~harmonize.handlers.ReconstructionMetricsHandler`).
    """
    return ConcatDataset([_TaggedSet(getattr(splits, name), prefix) for prefix, name in EVALUATION_SETS.items()])


def unlearning_evaluator(
    network: nn.Module,
    splits: ReconSplits,
    device: str | torch.device = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
) -> SupervisedEvaluator:
    """The evaluator of ``evaluate.json``, built in Python: ``network`` on :func:`evaluation_dataset` of ``splits``.

    Its ``prepare_batch`` reads the network's ``input_keys`` (the zero-filled image, or VarNet's k-space and mask)
    and the ``target``; a :class:`~harmonize.handlers.ReconstructionMetricsHandler` puts each set's PSNR and SSIM,
    and the zero-filled input's, into ``evaluator.state.metrics``.
    """
    loader = DataLoader(evaluation_dataset(splits), batch_size=batch_size, shuffle=False, num_workers=0)
    return SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=loader,
        network=network.to(device),
        prepare_batch=PrepareBatchKeys(getattr(network, "input_keys", (Keys.IMAGE,)), target_key=Keys.TARGET),
        inferer=SimpleInferer(),
        val_handlers=[ReconstructionMetricsHandler()],
        decollate=False,
    )


def _table_row(method: str, metrics: Mapping[str, float], seconds: float, prefix: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"method": str(method), "seconds": float(seconds)}
    for key in TABLE_COLUMNS[1:-1]:
        if prefix + key not in metrics:
            raise ConfigError(
                f"The evaluator's metrics lack {prefix + key!r} (it has {sorted(metrics)}): attach a "
                "harmonize.handlers.ReconstructionMetricsHandler and evaluate "
                "harmonize.bundle.recon.evaluation_dataset(splits)."
            )
        row[key] = float(metrics[prefix + key])
    return {key: row[key] for key in TABLE_COLUMNS}


def evaluate_checkpoints(
    evaluator: SupervisedEvaluator,
    ckpt_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    methods: Sequence[ReconMethod | str] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> ReconUnlearningResult:
    """BTA / KTA / UA PSNR and SSIM of every model the bundle saved, with each run's wall time.

    Each checkpoint of :data:`EVALUATION_ORDER` found in ``ckpt_dir`` (or of ``methods``) is loaded into
    ``evaluator.network`` in turn and the evaluator is run (``evaluate.json``'s ``evaluator``, or
    :func:`unlearning_evaluator`): its :class:`~harmonize.handlers.ReconstructionMetricsHandler` scores each volume
    of the retain test set (BTA), the forget test set (KTA) and the forget training set (UA). A method's time
    comes from the run record beside its checkpoint (``nan`` without one). The zero-filled input is scored too,
    as a floor.

    Args:
        evaluator: a ``SupervisedEvaluator`` over :func:`evaluation_dataset` with the metrics handler attached.
        ckpt_dir: the bundle's ``models/`` folder.
        output_dir: folder for ``recon_unlearning.md`` and ``recon_unlearning.json``; ``None`` writes nothing.
        methods: rows to evaluate (default: every checkpoint found).
        sizes: the number of slices of each set, recorded in the JSON file (``splits.sizes()``).

    Returns:
        A :class:`~harmonize.workflows.recon_unlearning.ReconUnlearningResult` (no fraction sweep, no models).

    Raises:
        ConfigError: no checkpoint of the original, or a requested method without a checkpoint.
    """
    ckpt_dir = Path(ckpt_dir)
    wanted = [_method(m, EVALUATION_ORDER, "methods") for m in methods] if methods is not None else None
    candidates = wanted if wanted is not None else list(EVALUATION_ORDER)
    missing = [str(m) for m in candidates if not (ckpt_dir / checkpoint_name(m)).is_file()]
    if str(ReconMethod.ORIGINAL) in missing or (wanted is not None and missing):
        raise ConfigError(
            f"No checkpoint for {missing} in {ckpt_dir}: run configs/train.json (original), configs/oracle.json and "
            "configs/unlearn.json (--method ...) with the same bundle_root first."
        )
    table: list[dict[str, Any]] = []
    records: dict[str, Any] = {}
    zero_filled: dict[str, Any] = {}
    for method in (m for m in candidates if str(m) not in missing):
        load_weights(evaluator.network, ckpt_dir / checkpoint_name(method))
        record = read_run_record(ckpt_dir / record_name(method))
        if record is None:
            logger.warning("No run record %s: the time of %s is unknown", ckpt_dir / record_name(method), method)
        seconds = float(record["seconds"]) if record is not None else math.nan
        records[str(method)] = record
        evaluator.run()
        table.append(_table_row(method, evaluator.state.metrics, seconds))
        zero_filled = _table_row("zero_filled", evaluator.state.metrics, 0.0, prefix="zero_filled_")
    result = ReconUnlearningResult(
        table=table, fraction_table=[], sizes=dict(sizes or {}), zero_filled=zero_filled
    )
    if output_dir is not None:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        result.files = {name: folder / OUTPUT_FILES[name] for name in ("markdown", "json")}
        write_text_atomic(result.files["markdown"], format_markdown(table, zero_filled=zero_filled))
        payload = {
            "columns": list(TABLE_COLUMNS),
            "table": [{k: _finite(v) for k, v in row.items()} for row in table],
            "zero_filled": {k: _finite(v) for k, v in zero_filled.items()},
            "sizes": result.sizes,
            "runs": records,
        }
        write_json_atomic(result.files["json"], payload, indent=2)
        logger.info("Wrote %s", ", ".join(str(p) for p in result.files.values()))
    return result


def inference_files(
    dataset_dir: str | os.PathLike | None,
    images: str | Sequence[str] | None = None,
    suffixes: Sequence[str] = INFERENCE_SUFFIXES,
) -> list[str]:
    """The files an inference config reconstructs: ``images`` if given, else the matching files in ``dataset_dir``.

    Nothing is checked here, so that a config parses (and MONAI's property check runs) before any data exists;
    :func:`check_inference_inputs` checks the list when the run starts.

    Args:
        dataset_dir: a folder whose files ending in one of ``suffixes`` (not its subfolders) are reconstructed.
        images: one path or a list of paths; overrides ``dataset_dir``.
        suffixes: the file suffixes taken from ``dataset_dir`` (any case); NIfTI by default, ``(".h5",)`` for fastMRI.

    Returns:
        The paths, sorted when they come from the folder.
    """
    if images is not None:
        return [str(images)] if isinstance(images, (str, os.PathLike)) else [str(p) for p in images]
    folder = Path(dataset_dir) if dataset_dir is not None else None
    if folder is None or not folder.is_dir():
        return []
    wanted = tuple(s.lower() for s in suffixes)
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(wanted))


def check_inference_inputs(
    files: Sequence[str],
    dataset_dir: str | os.PathLike | None,
    ckpt_path: str | os.PathLike,
    writer: Any = None,
    suffixes: Sequence[str] = INFERENCE_SUFFIXES,
) -> None:
    """Check, before an inference config runs, that it has images to reconstruct and weights to do it with.

    Args:
        files: the images (:func:`inference_files`).
        dataset_dir: the folder they came from (named in the message).
        ckpt_path: the network's weights.
        writer: the config's writer (its ``path_of(input)`` gives each output's path): if given, no output may
            replace an input and no two inputs may share an output.
        suffixes: the file types the config reads.

    Raises:
        ConfigError: listing every problem: no images, a missing image or one of another type, an output that would
            replace an input, another output or a file harmonize did not write, missing weights (naming the config
            that writes them).
    """
    kinds = ", ".join(f"*{s}" for s in suffixes)
    problems = []
    if not files:
        problems.append(
            f"No input files ({kinds}) in dataset_dir={dataset_dir}: pass --dataset_dir <folder> or "
            "--images \"['<file>']\"."
        )
    problems += [f"{f}: no such file." for f in files if not Path(f).is_file()]
    problems += [
        f"{f}: not one of the file types this config reads ({kinds})." for f in files
        if Path(f).is_file() and not f.lower().endswith(tuple(s.lower() for s in suffixes))
    ]
    if writer is not None:
        inputs = {Path(f).resolve(): f for f in files}
        outputs: dict[Path, str] = {}
        for f in files:
            target = Path(writer.path_of(f))
            if target.resolve() in inputs:
                problems.append(
                    f"{f}: its reconstruction would replace the input {inputs[target.resolve()]}: choose another "
                    "output_dir."
                )
            if target in outputs:
                problems.append(f"{outputs[target]} and {f} have the same name: both would be written to {target}.")
            outputs.setdefault(target, f)
        try:
            check_replaceable([t for t in outputs if t.resolve() not in inputs], "Bundle inference")
        except OutputDirError as err:
            problems.append(err.message)
    if not Path(ckpt_path).is_file():
        problems.append(
            f"No model weights at {ckpt_path}: train them first (python -m monai.bundle run --config_file "
            "configs/train.json, or unlearn.json for --method <m>) with the same bundle_root, or pass --ckpt_path."
        )
    if problems:
        raise ConfigError("The reconstruction bundle cannot run inference.", problems=problems)


def summarise_seeds(eval_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike | None = None
                    ) -> ReconUnlearningResult:
    """The mean over seeds, with 95 % intervals, of the tables ``evaluate.json`` wrote for several seeds.

    Each folder is one seed's ``output_dir`` (``<bundle_root>/eval`` of a bundle root whose configs ran with
    that ``--seed``). Each row also gets ``iterations``: the training iterations of the method's stages, from its
    run record.

    Args:
        eval_dirs: the folders holding ``recon_unlearning.json``, one per seed.
        output_dir: folder for the markdown and JSON tables over seeds; ``None`` writes nothing.

    Returns:
        A :class:`~harmonize.workflows.recon_unlearning.ReconUnlearningResult`: ``table`` the means (``<key>_ci``
        the intervals), ``per_seed`` each folder's table.

    Raises:
        ConfigError: no folder, a folder without a table, or tables of different methods.
    """
    if not eval_dirs:
        raise ConfigError("summarise_seeds: give the evaluation folder of at least one seed (<bundle_root>/eval).")
    tables: list[list[dict[str, Any]]] = []
    first_methods: list[str] | None = None
    for folder in map(Path, eval_dirs):
        path = folder / OUTPUT_FILES["json"]
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"Cannot read {path}: {err}. Run configs/evaluate.json with output_dir {folder} "
                              "first.") from err
        runs = payload.get("runs") or {}
        table = [{**row, "iterations": _iterations(runs.get(row["method"])),
                  "seed": (runs.get(row["method"]) or {}).get("seed")} for row in payload["table"]]
        methods = [row["method"] for row in table]
        if first_methods is None:
            first_methods = methods
        elif methods != first_methods:
            raise ConfigError(f"{path} has the methods {methods}, the first seed's table has {first_methods}: "
                              "evaluate the same methods on every seed.")
        tables.append(table)
    result = ReconUnlearningResult(table=over_seeds(tables), fraction_table=[], sizes={}, per_seed=tables)
    if output_dir is not None:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        result.files = {name: folder / OUTPUT_FILES[name] for name in ("markdown", "json")}
        write_text_atomic(result.files["markdown"], format_markdown(result.table))
        payload = {"columns": list(TABLE_COLUMNS), "table": [{k: _finite(v) for k, v in r.items()} for r in result.table],
                   "per_seed": [[{k: _finite(v) for k, v in r.items()} for r in t] for t in tables],
                   "eval_dirs": [str(d) for d in eval_dirs]}
        write_json_atomic(result.files["json"], payload, indent=2)
    return result


def _iterations(record: Mapping[str, Any] | None) -> int | None:
    """Training iterations of a run record's stages (``None`` without a record)."""
    if not record:
        return None
    return sum(int(stage.get("iterations", 0)) for stage in record.get("stages", ()))
