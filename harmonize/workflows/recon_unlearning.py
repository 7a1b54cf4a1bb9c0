"""The reconstruction-unlearning experiment of Xue et al. ("Erase to Enhance"), end to end.

1. Build the four sets (:mod:`harmonize.recon.slices`): retain/forget x train/test. By default retain =
   synthetic brain scans and forget = phantoms (the embedded analogue of the paper's brain vs knee); with a
   ``manifest``, forget = one site of a multi-site cohort (or the rows marked ``forget``).
2. Train the **original** model on retain + forget and the **oracle** on retain only (from scratch).
3. Run every unlearning method from the original (:func:`~harmonize.workflows.machine_unlearning.run_unlearning`),
   the FT variants on a fraction of the retain set, plus the baseline of retraining from scratch on that same
   fraction (``retrain_subset``).
4. Evaluate per-volume PSNR and SSIM on the retain test set (BTA), the forget test set (KTA) and the forget
   training set (UA), with each method's wall time (RTE), and sweep the retain fraction for the FT variants.
5. Write the table as markdown and JSON and two Pareto plots (PSNR vs seconds, PSNR vs retain fraction).

Unlearning works when KTA/UA fall from the original's towards the oracle's while BTA stays close to the
original's, in a fraction of the oracle's time.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from torch import nn
from torch.utils.data import ConcatDataset, Subset

from harmonize.audit.recon_report import format_markdown, plot_pareto
from harmonize.audit.seed_summary import PER_SEED, SEED, summarise_seeds
from harmonize.io import write_text_atomic
from harmonize.keys import Keys, ReconMethod
from harmonize.losses.ssim_l1 import SSIML1Loss
from harmonize.metrics.reconstruction import TABLE_COLUMNS, unlearning_row
from harmonize.networks.reconstruction import ReconUNet, ReconVarNet
from harmonize.recon.slices import (
    ReconSplits,
    anatomy_shift_splits,
    site_forget_splits,
)
from harmonize.workflows.machine_unlearning import (
    MachineUnlearningSettings,
    PrepareBatchKeys,
    Stopwatch,
    method_iterations,
    run_unlearning,
    train_stage,
)
from harmonize.workflows.recon_settings import (
    DEFAULT_METHODS,
    FRACTION_METHODS,
    ReconDataSettings,
    ReconStageSettings,
    ReconUnlearningSettings,
)

__all__ = [
    "DEFAULT_METHODS",
    "FRACTION_METHODS",
    "OUTPUT_FILES",
    "ReconDataSettings",
    "ReconStageSettings",
    "ReconUnlearningResult",
    "ReconUnlearningSettings",
    "build_network",
    "build_splits",
    "format_markdown",
    "over_seeds",
    "plot_pareto",
    "predictor",
    "retain_subset",
    "run_recon_unlearning",
    "stage_settings",
]

logger = logging.getLogger(__name__)

#: Files written to the output folder.
OUTPUT_FILES = {
    "markdown": "recon_unlearning.md",
    "json": "recon_unlearning.json",
    "pareto_seconds": "pareto_seconds.png",
    "pareto_fraction": "pareto_fraction.png",
}
#: Methods whose forget stage also sees the retain subset when ``forget_with_retain`` is set (the two-stage ones).
MIXED_METHODS: tuple[ReconMethod, ...] = (ReconMethod.GA_L1_FT, ReconMethod.NL_FT)


@dataclass
class ReconUnlearningResult:
    """What the experiment returns.

    Attributes:
        table: one row per method, the original and the oracle first: the keys of
            :data:`~harmonize.metrics.reconstruction.TABLE_COLUMNS` and ``iterations`` (training iterations of
            the method's stages) and ``cpu_seconds`` (the process's CPU seconds over the same stages as
            ``seconds``), each the mean over the seeds followed by its 95 % interval ``<key>_ci`` (``None`` with
            one seed).
        fraction_table: rows of the retain-fraction sweep, first seed (the table's keys plus ``fraction``).
        sizes: number of slices in each set (first seed).
        zero_filled: the same metrics for the zero-filled input itself (no network), a floor to compare with.
        files: paths written (``markdown``, ``json``, ``pareto_seconds``, ``pareto_fraction``), if any.
        models: the trained models by method, first seed (not saved to disk).
        per_seed: each seed's table (rows with their ``seed``), in seed order.
    """

    table: list[dict[str, Any]]
    fraction_table: list[dict[str, Any]]
    sizes: dict[str, int]
    zero_filled: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)
    per_seed: list[list[dict[str, Any]]] = field(default_factory=list)


def build_network(settings: ReconUnlearningSettings) -> nn.Module:
    """The reconstruction network named by ``settings.network`` (initialised under ``settings.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        if settings.network == "varnet":
            return ReconVarNet()
        return ReconUNet(channels=settings.channels, strides=(2,) * (len(settings.channels) - 1))


def build_splits(settings: ReconUnlearningSettings) -> ReconSplits:
    """The four sets of the experiment (anatomy shift, or the site scenario with a manifest)."""
    data = settings.data
    if data.manifest is not None:
        return site_forget_splits(data.manifest, forget_site=data.forget_site, size=data.size,
                                  slices_per_volume=data.slices_per_volume, kspace=settings.kspace, seed=settings.seed)
    return anatomy_shift_splits(
        retain_train=data.retain_train_volumes, forget_train=data.forget_train_volumes,
        retain_test=data.retain_test_volumes, forget_test=data.forget_test_volumes,
        slices_per_volume=data.slices_per_volume, size=data.size, kspace=settings.kspace,
        phantom_kind=data.phantom_kind, seed=settings.seed,
    )


def stage_settings(settings: ReconUnlearningSettings) -> MachineUnlearningSettings:
    """The stage settings handed to :func:`~harmonize.workflows.machine_unlearning.run_unlearning`."""
    stages = settings.unlearning
    return MachineUnlearningSettings(
        loss_function=SSIML1Loss(l1_weight=stages.loss_l1_weight), learning_rate=settings.learning_rate,
        ga_learning_rate=stages.ga_learning_rate, ft_epochs=stages.ft_epochs, ga_epochs=stages.ga_epochs,
        nl_epochs=stages.nl_epochs, oracle_epochs=settings.oracle_epochs, l1_penalty=stages.l1_penalty,
        noise_std=stages.noise_std, noise_mode=stages.noise_mode, loss_ceiling=stages.loss_ceiling,
        retain_weight=stages.retain_weight, network_factory=lambda: build_network(settings), device=settings.device,
        seed=settings.seed, progress=settings.progress,
    )


def _loader(dataset: Sequence[Mapping[str, Any]], settings: ReconUnlearningSettings, offset: int) -> DataLoader:
    generator = torch.Generator().manual_seed(settings.seed + offset)
    return DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, generator=generator, num_workers=0)


def predictor(model: nn.Module, input_keys: Sequence[str], device: str) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """``model`` (put in eval mode) as a function of a collated batch dict, reading ``input_keys``, without grad."""
    model.eval()
    prepare = PrepareBatchKeys(input_keys, target_key=None)

    def predict(batch: Mapping[str, Any]) -> torch.Tensor:
        prepared = prepare(batch, device)
        inputs, args = prepared[0], prepared[2] if len(prepared) == 4 else ()
        with torch.no_grad():
            return model(inputs, *args)

    return predict


def retain_subset(retain: Sequence[Mapping[str, Any]], fraction: float, seed: int) -> Subset:
    """A random fraction of the retain set (at least one sample); subsets of growing fractions are nested."""
    order = torch.randperm(len(retain), generator=torch.Generator().manual_seed(seed)).tolist()
    count = max(1, round(fraction * len(retain)))
    return Subset(retain, sorted(order[:count]))


def _loader_offset(method: ReconMethod) -> int:
    """Seed offset of a method's retain-subset loader: fixed per method, so its batches (and figures) do not
    depend on which other methods run (the benchmark runs fewer than the demo)."""
    return 10 + DEFAULT_METHODS.index(method)


def _run_method(
    method: ReconMethod,
    original: nn.Module,
    subset: Subset,
    forget_loader: DataLoader,
    settings: ReconUnlearningSettings,
    offset: int,
) -> tuple[nn.Module, Stopwatch, int]:
    """``(model, wall and CPU seconds of its stages, training iterations)`` of one method from the original."""
    unlearning = stage_settings(settings)
    subset_loader = _loader(subset, settings, offset)
    watch = Stopwatch()
    if method == ReconMethod.RETRAIN_SUBSET:
        model, _ = run_unlearning(ReconMethod.ORACLE, original, subset_loader, None, unlearning, stopwatch=watch)
        return model, watch, method_iterations(ReconMethod.ORACLE, subset_loader, None, unlearning)
    if settings.unlearning.forget_with_retain and method in MIXED_METHODS:
        forget_loader = _loader(ConcatDataset([forget_loader.dataset, subset]), settings, 2)
    model, _ = run_unlearning(method, original, subset_loader, forget_loader, unlearning, stopwatch=watch)
    return model, watch, method_iterations(method, subset_loader, forget_loader, unlearning)


def run_recon_unlearning(
    settings: ReconUnlearningSettings | None = None,
    output_dir: str | os.PathLike | None = None,
    splits: ReconSplits | None = None,
) -> ReconUnlearningResult:
    """Run the whole experiment on ``settings.seeds`` seeds and (optionally) write its table and plots.

    Seed ``settings.seed + i`` builds its own sets (unless ``splits`` is given), trains its own original and
    oracle and runs every method from that original; the table holds each figure's mean over the seeds and its
    95 % interval (``<key>_ci``). The retain-fraction sweep and the returned models are the first seed's.

    Args:
        settings: the experiment's settings (default: the demo).
        output_dir: folder for the markdown and JSON table and the PNG plots (created if needed); ``None``
            writes nothing.
        splits: ready-made sets (e.g. from :func:`harmonize.recon.fastmri.fastmri_splits`), used on every seed;
            default: built from ``settings`` on each seed.

    Returns:
        The :class:`ReconUnlearningResult`.

    Raises:
        ConfigError: invalid settings.
    """
    settings = settings or ReconUnlearningSettings()
    runs = []
    for i in range(settings.seeds):
        seed = settings.seed + i
        logger.info("Seed %d (%d of %d)", seed, i + 1, settings.seeds)
        one = replace(settings, seed=seed, seeds=1, fractions=settings.fractions if i == 0 else ())
        runs.append(_run_seed(one, splits or build_splits(one), keep_models=i == 0))
    first = runs[0]
    result = ReconUnlearningResult(
        table=over_seeds([run.table for run in runs]), fraction_table=first.fraction_table, sizes=first.sizes,
        zero_filled=over_seeds([[run.zero_filled] for run in runs])[0], models=first.models,
        per_seed=[run.table for run in runs],
    )
    if output_dir is not None:
        result.files = write_outputs(result, settings, output_dir)
    return result


def over_seeds(tables: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of the mean over seeds, each numeric figure followed by its 95 % interval ``<key>_ci``.

    Args:
        tables: one table per seed, the same methods in the same order.
    """
    rows = []
    for per_seed in zip(*tables, strict=True):
        summary = summarise_seeds(per_seed)
        summary.pop(PER_SEED)
        rows.append(summary)
    return rows


def _run_seed(settings: ReconUnlearningSettings, splits: ReconSplits, keep_models: bool) -> ReconUnlearningResult:
    """One seed of the experiment: the original, the oracle, every method and the fraction sweep."""
    sizes = splits.sizes()
    logger.info("Sets (slices): %s", sizes)
    unlearning = stage_settings(settings)
    input_keys = build_network(settings).input_keys

    def row(method: str, model: nn.Module, watch: Stopwatch, iterations: int) -> dict[str, Any]:
        scores = unlearning_row(
            method, predictor(model, input_keys, settings.device),
            splits.retain_test, splits.forget_test, splits.forget_train, watch.wall,
        )
        return {**scores, "cpu_seconds": watch.cpu, "iterations": iterations, SEED: settings.seed}

    models: dict[str, nn.Module] = {}
    table: list[dict[str, Any]] = []
    original = build_network(settings)
    logger.info("Training the original model on retain + forget (%d epochs)", settings.original_epochs)
    both = _loader(ConcatDataset([splits.retain_train, splits.forget_train]), settings, 0)
    watch = Stopwatch()
    train_stage(original, both, settings.original_epochs, unlearning, stopwatch=watch)
    models[ReconMethod.ORIGINAL] = original
    table.append(row(ReconMethod.ORIGINAL, original, watch, settings.original_epochs * len(both)))
    logger.info("Training the oracle on retain only (%d epochs)", settings.oracle_epochs)
    retain_loader = _loader(splits.retain_train, settings, 1)
    forget_loader = _loader(splits.forget_train, settings, 2)
    watch = Stopwatch()
    oracle, _ = run_unlearning(ReconMethod.ORACLE, original, retain_loader, None, unlearning, stopwatch=watch)
    models[ReconMethod.ORACLE] = oracle
    table.append(row(ReconMethod.ORACLE, oracle, watch,
                     method_iterations(ReconMethod.ORACLE, retain_loader, None, unlearning)))

    subset = retain_subset(splits.retain_train, settings.unlearning.retain_fraction, settings.seed)
    for method in map(ReconMethod, settings.methods):
        logger.info("Unlearning: %s", method)
        model, watch, iterations = _run_method(method, original, subset, forget_loader, settings,
                                               _loader_offset(method))
        models[method] = model
        table.append(row(method, model, watch, iterations))

    fraction_table: list[dict[str, Any]] = []
    for fraction in settings.fractions:
        fsubset = retain_subset(splits.retain_train, fraction, settings.seed)
        for method in settings.fraction_methods:
            method = ReconMethod(method)
            if math.isclose(fraction, settings.unlearning.retain_fraction) and method in models:
                same = next(r for r in table if r["method"] == method)
                fraction_table.append({**same, "fraction": fraction})
                continue
            logger.info("Fraction sweep: %s on %.0f%% of retain", method, 100 * fraction)
            model, watch, iterations = _run_method(method, original, fsubset, forget_loader, settings, 100)
            fraction_table.append({**row(method, model, watch, iterations), "fraction": fraction})

    zero_filled = unlearning_row(
        "zero_filled", lambda batch: torch.as_tensor(batch[Keys.IMAGE]),
        splits.retain_test, splits.forget_test, splits.forget_train, 0.0,
    )
    return ReconUnlearningResult(table=table, fraction_table=fraction_table, sizes=sizes,
                                 zero_filled={**zero_filled, SEED: settings.seed},
                                 models=models if keep_models else {})


# ---------------------------------------------------------------------------------------------------- output
def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return value


def write_outputs(
    result: ReconUnlearningResult, settings: ReconUnlearningSettings, output_dir: str | os.PathLike
) -> dict[str, Path]:
    """Write the markdown and JSON tables and the two plots (atomically) and return their paths."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / filename for name, filename in OUTPUT_FILES.items()}
    write_text_atomic(files["markdown"], format_markdown(result.table, result.fraction_table, result.zero_filled))
    payload = {
        "columns": list(TABLE_COLUMNS),
        "table": [{k: _jsonable(v) for k, v in r.items()} for r in result.table],
        "fraction_table": [{k: _jsonable(v) for k, v in r.items()} for r in result.fraction_table],
        "zero_filled": {k: _jsonable(v) for k, v in result.zero_filled.items()},
        "per_seed": [[{k: _jsonable(v) for k, v in r.items()} for r in table] for table in result.per_seed],
        "sizes": result.sizes,
        "settings": settings.to_dict(),
    }
    write_text_atomic(files["json"], json.dumps(payload, indent=2, default=str) + "\n")
    plot_pareto(result.table, result.fraction_table, files["pareto_seconds"], files["pareto_fraction"])
    logger.info("Wrote %s", ", ".join(str(p) for p in files.values()))
    return files
