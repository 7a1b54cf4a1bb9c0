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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from monai.data import DataLoader
from torch import nn
from torch.utils.data import ConcatDataset, Subset

from harmonize import defaults
from harmonize.errors import ConfigError, check_option
from harmonize.io import atomic_write, write_text_atomic
from harmonize.keys import Keys, MaskType, NoiseMode, PhantomKind, ReconMethod
from harmonize.losses.ssim_l1 import L1_WEIGHT, SSIML1Loss
from harmonize.metrics.reconstruction import TABLE_COLUMNS, unlearning_row
from harmonize.networks.reconstruction import UNET_CHANNELS, ReconUNet, ReconVarNet
from harmonize.recon.slices import (
    KspaceSettings,
    ReconSplits,
    anatomy_shift_splits,
    site_forget_splits,
)
from harmonize.workflows.machine_unlearning import (
    MachineUnlearningSettings,
    PrepareBatchKeys,
    run_unlearning,
    train_stage,
)

__all__ = [
    "OUTPUT_FILES",
    "ReconUnlearningResult",
    "ReconUnlearningSettings",
    "build_network",
    "build_splits",
    "format_markdown",
    "plot_pareto",
    "predictor",
    "retain_subset",
    "run_recon_unlearning",
]

logger = logging.getLogger(__name__)

#: Files written to the output folder.
OUTPUT_FILES = {
    "markdown": "recon_unlearning.md",
    "json": "recon_unlearning.json",
    "pareto_seconds": "pareto_seconds.png",
    "pareto_fraction": "pareto_fraction.png",
}
#: Methods run by default, in table order (after the original and the oracle).
DEFAULT_METHODS: tuple[str, ...] = (
    ReconMethod.FT,
    ReconMethod.GA,
    ReconMethod.GA_L1,
    ReconMethod.GA_L1_FT,
    ReconMethod.NL,
    ReconMethod.NL_FT,
    ReconMethod.RETRAIN_SUBSET,
)
#: Methods that use the retain fraction (swept for the fraction plot when listed in ``fraction_methods``).
FRACTION_METHODS: tuple[ReconMethod, ...] = (
    ReconMethod.FT,
    ReconMethod.GA_L1_FT,
    ReconMethod.NL_FT,
    ReconMethod.RETRAIN_SUBSET,
)
#: Methods whose forget stage also sees the retain subset when ``forget_with_retain`` is set (the two-stage ones).
MIXED_METHODS: tuple[ReconMethod, ...] = (ReconMethod.GA_L1_FT, ReconMethod.NL_FT)
#: Network choices.
NETWORKS = ("unet", "varnet")


@dataclass
class ReconUnlearningSettings:
    """Every setting of the experiment. Defaults: the demo (64 x 64 slices, about 2-3 minutes on 2 CPU cores).

    Data: ``size``, ``slices_per_volume``, the numbers of volumes of each set (anatomy-shift scenario),
    ``phantom_kind``; or ``manifest`` (+ ``forget_site``) for the site scenario. Acquisition: ``mask_type``,
    ``acceleration``, ``center_fraction``, ``num_coils``. Network: ``network`` (``unet`` or ``varnet``),
    ``channels``. Training: ``batch_size``, ``learning_rate`` (Adam, paper 1e-3), epochs of the original, the
    oracle and each unlearning stage, ``retain_fraction`` (paper 10 %, here 20 %), ``loss_l1_weight`` (the L1
    term of the SSIM loss, paper 1e-5), ``l1_penalty`` (GA-L1's weight penalty), ``noise_std``/``noise_mode`` (NL),
    ``loss_ceiling`` (bounds GA), ``forget_with_retain`` (the forget stage of GA-L1-FT and NL-FT runs over the
    forget set plus the FT's retain subset, descending on those retain samples with weight ``retain_weight`` while
    it ascends on the forget ones). Sweep: ``fractions`` x ``fraction_methods``. ``seed`` seeds everything.
    The unlearning defaults were chosen by a sweep at demo size (``docs/reconstruction.md``).
    """

    size: int = defaults.RECON_SIZE
    slices_per_volume: int = 4
    retain_train_volumes: int = 40
    forget_train_volumes: int = 8
    retain_test_volumes: int = 8
    forget_test_volumes: int = 8
    phantom_kind: str = PhantomKind.MIXED
    manifest: str | None = None
    forget_site: str | None = None
    mask_type: str = MaskType.EQUISPACED
    acceleration: float = defaults.RECON_ACCELERATION
    center_fraction: float = defaults.RECON_CENTER_FRACTION
    num_coils: int = 1
    network: str = "unet"
    channels: tuple[int, ...] = UNET_CHANNELS
    batch_size: int = 8
    learning_rate: float = defaults.LEARNING_RATE
    ga_learning_rate: float | None = defaults.RECON_GA_LEARNING_RATE
    original_epochs: int = 30
    oracle_epochs: int = 30
    ft_epochs: int = defaults.RECON_FT_EPOCHS
    ga_epochs: int = defaults.RECON_FORGET_EPOCHS
    nl_epochs: int = defaults.RECON_FORGET_EPOCHS
    retain_fraction: float = defaults.RECON_RETAIN_FRACTION
    loss_l1_weight: float = L1_WEIGHT
    l1_penalty: float = defaults.RECON_L1_PENALTY
    noise_std: float = defaults.RECON_NOISE_STD
    noise_mode: str = NoiseMode.ADD
    loss_ceiling: float | None = defaults.RECON_LOSS_CEILING
    forget_with_retain: bool = True
    retain_weight: float = defaults.RECON_RETAIN_WEIGHT
    methods: tuple[str, ...] = DEFAULT_METHODS
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3)
    fraction_methods: tuple[str, ...] = (ReconMethod.FT, ReconMethod.GA_L1_FT)
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    @classmethod
    def demo(cls) -> ReconUnlearningSettings:
        """The settings of ``harmonize demo`` (the defaults)."""
        return cls()

    @classmethod
    def tiny(cls) -> ReconUnlearningSettings:
        """A few seconds at 32 x 32: for tests and smoke runs (numbers are not meaningful)."""
        return cls(
            size=32,
            slices_per_volume=2,
            retain_train_volumes=6,
            forget_train_volumes=2,
            retain_test_volumes=2,
            forget_test_volumes=2,
            channels=(8, 16, 32),
            batch_size=4,
            original_epochs=1,
            oracle_epochs=1,
            ft_epochs=1,
            ga_epochs=1,
            nl_epochs=1,
            retain_fraction=0.5,
            fractions=(0.5, 1.0),
            fraction_methods=(ReconMethod.FT,),
        )

    @classmethod
    def benchmark(cls) -> ReconUnlearningSettings:
        """Larger: 200 brain and 20 phantom training volumes (8 slices each), longer training (CPU: hours)."""
        return cls(
            slices_per_volume=8,
            retain_train_volumes=200,
            forget_train_volumes=20,
            retain_test_volumes=20,
            forget_test_volumes=20,
            original_epochs=50,
            oracle_epochs=50,
            ft_epochs=18,
            ga_epochs=3,
            nl_epochs=3,
            fractions=(0.02, 0.05, 0.1, 0.2, 0.5),
            fraction_methods=(ReconMethod.FT, ReconMethod.GA_L1_FT, ReconMethod.NL_FT, ReconMethod.RETRAIN_SUBSET),
        )

    def check(self) -> None:
        """Raise :class:`~harmonize.errors.ConfigError` listing every setting out of range."""
        problems = []
        counts = ("size", "slices_per_volume", "batch_size", "original_epochs", "oracle_epochs", "ft_epochs",
                  "ga_epochs", "nl_epochs")
        for name in counts:  # a bundle override may bring text ('--max_epochs two'): named, not a TypeError
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"'{name}' must be an integer >= 1, got {value!r} ({type(value).__name__}).")
            elif value < 1:
                problems.append(f"'{name}' must be >= 1, got {value}.")
        fractions = {"retain_fraction": self.retain_fraction}
        fractions.update({f"fractions[{i}]": f for i, f in enumerate(self.fractions)})
        for name, value in fractions.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                problems.append(f"'{name}' must be a number in (0, 1], got {value!r} ({type(value).__name__}).")
            elif not 0 < value <= 1:
                problems.append(f"'{name}' must be in (0, 1], got {value}.")
        if self.network not in NETWORKS:
            problems.append(f"'network' must be one of {list(NETWORKS)}, got {self.network!r}.")
        for name in ("methods", "fraction_methods"):
            for m in getattr(self, name):
                if m not in ReconMethod.__members__.values() or m in (ReconMethod.ORIGINAL, ReconMethod.ORACLE):
                    problems.append(
                        f"'{name}' holds {m!r}; choose from {[str(x) for x in DEFAULT_METHODS]} "
                        "(the original and the oracle always run)."
                    )
        for m in self.fraction_methods:
            if m in ReconMethod.__members__.values() and m not in FRACTION_METHODS:
                problems.append(f"'fraction_methods' holds {m!r}, which does not use retain data; "
                                f"choose from {[str(x) for x in FRACTION_METHODS]}.")
        if problems:
            raise ConfigError("Invalid reconstruction-unlearning settings.", problems=problems)
        self.kspace().check()

    def kspace(self) -> KspaceSettings:
        """The acquisition settings (k-space is kept only for VarNet)."""
        return KspaceSettings(
            mask_type=check_option("mask_type", self.mask_type, MaskType),
            acceleration=self.acceleration,
            center_fraction=self.center_fraction,
            num_coils=self.num_coils,
            keep_kspace=self.network == "varnet",
        )

    def unlearning(self) -> MachineUnlearningSettings:
        """The stage settings handed to :func:`~harmonize.workflows.machine_unlearning.run_unlearning`."""
        return MachineUnlearningSettings(
            loss_function=SSIML1Loss(l1_weight=self.loss_l1_weight),
            learning_rate=self.learning_rate,
            ga_learning_rate=self.ga_learning_rate,
            ft_epochs=self.ft_epochs,
            ga_epochs=self.ga_epochs,
            nl_epochs=self.nl_epochs,
            oracle_epochs=self.oracle_epochs,
            l1_weight=self.l1_penalty,
            noise_std=self.noise_std,
            noise_mode=self.noise_mode,
            loss_ceiling=self.loss_ceiling,
            retain_weight=self.retain_weight,
            network_factory=lambda: build_network(self),
            device=self.device,
            seed=self.seed,
            progress=self.progress,
        )


@dataclass
class ReconUnlearningResult:
    """What the experiment returns.

    Attributes:
        table: one row per method (keys :data:`~harmonize.metrics.reconstruction.TABLE_COLUMNS`), the
            original and the oracle first.
        fraction_table: rows of the retain-fraction sweep (the table's keys plus ``fraction``).
        sizes: number of slices in each set.
        zero_filled: the same metrics for the zero-filled input itself (no network), a floor to compare with.
        files: paths written (``markdown``, ``json``, ``pareto_seconds``, ``pareto_fraction``), if any.
        models: the trained models by method (not saved to disk).
    """

    table: list[dict[str, Any]]
    fraction_table: list[dict[str, Any]]
    sizes: dict[str, int]
    zero_filled: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)


def build_network(settings: ReconUnlearningSettings) -> nn.Module:
    """The reconstruction network named by ``settings.network`` (initialised under ``settings.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        if settings.network == "varnet":
            return ReconVarNet()
        return ReconUNet(channels=settings.channels, strides=(2,) * (len(settings.channels) - 1))


def build_splits(settings: ReconUnlearningSettings) -> ReconSplits:
    """The four sets of the experiment (anatomy shift, or the site scenario with a manifest)."""
    if settings.manifest is not None:
        return site_forget_splits(
            settings.manifest,
            forget_site=settings.forget_site,
            size=settings.size,
            slices_per_volume=settings.slices_per_volume,
            kspace=settings.kspace(),
            seed=settings.seed,
        )
    return anatomy_shift_splits(
        retain_train=settings.retain_train_volumes,
        forget_train=settings.forget_train_volumes,
        retain_test=settings.retain_test_volumes,
        forget_test=settings.forget_test_volumes,
        slices_per_volume=settings.slices_per_volume,
        size=settings.size,
        kspace=settings.kspace(),
        phantom_kind=settings.phantom_kind,
        seed=settings.seed,
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


def _run_method(
    method: ReconMethod,
    original: nn.Module,
    subset: Subset,
    forget_loader: DataLoader,
    settings: ReconUnlearningSettings,
    offset: int,
) -> tuple[nn.Module, float]:
    unlearning = settings.unlearning()
    subset_loader = _loader(subset, settings, offset)
    if method == ReconMethod.RETRAIN_SUBSET:
        return run_unlearning(ReconMethod.ORACLE, original, subset_loader, None, unlearning)
    if settings.forget_with_retain and method in MIXED_METHODS:
        forget_loader = _loader(ConcatDataset([forget_loader.dataset, subset]), settings, 2)
    return run_unlearning(method, original, subset_loader, forget_loader, unlearning)


def run_recon_unlearning(
    settings: ReconUnlearningSettings | None = None,
    output_dir: str | os.PathLike | None = None,
    splits: ReconSplits | None = None,
) -> ReconUnlearningResult:
    """Run the whole experiment and (optionally) write its table and plots.

    Args:
        settings: the experiment's settings (default: the demo).
        output_dir: folder for the markdown and JSON table and the PNG plots (created if needed); ``None``
            writes nothing.
        splits: ready-made sets (e.g. from :func:`harmonize.recon.fastmri.fastmri_splits`); default: built from
            ``settings``.

    Returns:
        The :class:`ReconUnlearningResult`.

    Raises:
        ConfigError: invalid settings.
    """
    settings = settings or ReconUnlearningSettings()
    settings.check()
    splits = splits or build_splits(settings)
    sizes = splits.sizes()
    logger.info("Sets (slices): %s", sizes)
    unlearning = settings.unlearning()
    input_keys = build_network(settings).input_keys

    def row(method: str, model: nn.Module, seconds: float) -> dict[str, Any]:
        return unlearning_row(
            method, predictor(model, input_keys, settings.device),
            splits.retain_test, splits.forget_test, splits.forget_train, seconds,
        )

    models: dict[str, nn.Module] = {}
    table: list[dict[str, Any]] = []
    original = build_network(settings)
    logger.info("Training the original model on retain + forget (%d epochs)", settings.original_epochs)
    both = ConcatDataset([splits.retain_train, splits.forget_train])
    _, seconds = train_stage(original, _loader(both, settings, 0), settings.original_epochs, unlearning)
    models[ReconMethod.ORIGINAL] = original
    table.append(row(ReconMethod.ORIGINAL, original, seconds))
    logger.info("Training the oracle on retain only (%d epochs)", settings.oracle_epochs)
    retain_loader = _loader(splits.retain_train, settings, 1)
    forget_loader = _loader(splits.forget_train, settings, 2)
    oracle, seconds = run_unlearning(ReconMethod.ORACLE, original, retain_loader, None, unlearning)
    models[ReconMethod.ORACLE] = oracle
    table.append(row(ReconMethod.ORACLE, oracle, seconds))

    subset = retain_subset(splits.retain_train, settings.retain_fraction, settings.seed)
    for i, method in enumerate(settings.methods):
        method = ReconMethod(method)
        logger.info("Unlearning: %s", method)
        model, seconds = _run_method(method, original, subset, forget_loader, settings, 10 + i)
        models[method] = model
        table.append(row(method, model, seconds))

    fraction_table: list[dict[str, Any]] = []
    for fraction in settings.fractions:
        fsubset = retain_subset(splits.retain_train, fraction, settings.seed)
        for method in settings.fraction_methods:
            method = ReconMethod(method)
            if math.isclose(fraction, settings.retain_fraction) and method in models:
                same = next(r for r in table if r["method"] == method)
                fraction_table.append({**same, "fraction": fraction})
                continue
            logger.info("Fraction sweep: %s on %.0f%% of retain", method, 100 * fraction)
            model, seconds = _run_method(method, original, fsubset, forget_loader, settings, 100)
            fraction_table.append({**row(method, model, seconds), "fraction": fraction})

    zero_filled = unlearning_row(
        "zero_filled", lambda batch: torch.as_tensor(batch[Keys.IMAGE]),
        splits.retain_test, splits.forget_test, splits.forget_train, 0.0,
    )
    result = ReconUnlearningResult(
        table=table, fraction_table=fraction_table, sizes=sizes, zero_filled=zero_filled, models=models
    )
    if output_dir is not None:
        result.files = write_outputs(result, settings, output_dir)
    return result


# ---------------------------------------------------------------------------------------------------- output
def format_markdown(
    table: Sequence[Mapping[str, Any]],
    fraction_table: Sequence[Mapping[str, Any]] = (),
    zero_filled: Mapping[str, Any] | None = None,
) -> str:
    """The table as markdown: PSNR (dB) and SSIM per set, seconds and time as a percentage of the oracle's."""
    oracle = next((r["seconds"] for r in table if r["method"] == ReconMethod.ORACLE), None)
    header = ("| method | BTA PSNR | BTA SSIM | KTA PSNR | KTA SSIM | UA PSNR | UA SSIM | seconds | % oracle time |\n"
              "|---|---|---|---|---|---|---|---|---|")
    lines = [header]
    for r in table:
        share = f"{100 * r['seconds'] / oracle:.0f}" if oracle else "-"
        lines.append(
            f"| {r['method']} | {r['bta_psnr']:.2f} | {r['bta_ssim']:.3f} | {r['kta_psnr']:.2f} | {r['kta_ssim']:.3f} "
            f"| {r['ua_psnr']:.2f} | {r['ua_ssim']:.3f} | {r['seconds']:.1f} | {share} |"
        )
    text = ("BTA: retain test set; KTA: forget test set; UA: forget training set (Xue et al.). PSNR in dB, "
            "per volume, averaged over volumes.\n\n" + "\n".join(lines) + "\n")
    if zero_filled:
        text += (f"\nZero-filled input (no network): BTA {zero_filled['bta_psnr']:.2f} dB, KTA "
                 f"{zero_filled['kta_psnr']:.2f} dB, UA {zero_filled['ua_psnr']:.2f} dB.\n")
    if fraction_table:
        text += "\nRetain-fraction sweep:\n\n| method | fraction | BTA PSNR | KTA PSNR | UA PSNR | seconds |\n"
        text += "|---|---|---|---|---|---|\n"
        for r in fraction_table:
            text += (f"| {r['method']} | {r['fraction']:.2f} | {r['bta_psnr']:.2f} | {r['kta_psnr']:.2f} "
                     f"| {r['ua_psnr']:.2f} | {r['seconds']:.1f} |\n")
    return text


def plot_pareto(
    table: Sequence[Mapping[str, Any]],
    fraction_table: Sequence[Mapping[str, Any]],
    seconds_path: str | os.PathLike,
    fraction_path: str | os.PathLike,
) -> None:
    """Two Pareto plots: retain and forget PSNR vs wall time, and vs the retain fraction (FT variants).

    The original and the oracle are drawn as horizontal reference lines in both.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = {r["method"]: r for r in table if r["method"] in (ReconMethod.ORIGINAL, ReconMethod.ORACLE)}
    styles = {ReconMethod.ORIGINAL: ("tab:red", "--"), ReconMethod.ORACLE: ("tab:green", ":")}

    def references(ax: Any, key: str) -> None:
        for name, r in refs.items():
            color, style = styles[ReconMethod(name)]
            ax.axhline(r[key], color=color, linestyle=style, linewidth=1, label=f"{name}")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "bta_psnr", "retain test (BTA)"), (axes[1], "kta_psnr", "forget test (KTA)")):
        references(ax, key)
        for r in table:
            ax.scatter(r["seconds"], r[key], color="black" if r["method"] not in refs else styles[r["method"]][0])
            ax.annotate(r["method"], (r["seconds"], r[key]), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("wall time (s, log)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Reconstruction unlearning: quality vs time (higher BTA and lower KTA are better)")
    fig.tight_layout()
    _save_figure(fig, seconds_path)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = list(dict.fromkeys(r["method"] for r in fraction_table))
    for ax, key, title in ((axes[0], "bta_psnr", "retain test (BTA)"), (axes[1], "kta_psnr", "forget test (KTA)")):
        references(ax, key)
        for m in methods:
            rows = sorted((r for r in fraction_table if r["method"] == m), key=lambda r: r["fraction"])
            ax.plot([r["fraction"] for r in rows], [r[key] for r in rows], marker="o", label=m)
        ax.set_xlabel("fraction of the retain set used")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Reconstruction unlearning: quality vs retain data used")
    fig.tight_layout()
    _save_figure(fig, fraction_path)
    plt.close(fig)


def _save_figure(fig: Any, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


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
        "sizes": result.sizes,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(replace(settings)).items()},
    }
    write_text_atomic(files["json"], json.dumps(payload, indent=2, default=str) + "\n")
    plot_pareto(result.table, result.fraction_table, files["pareto_seconds"], files["pareto_fraction"])
    logger.info("Wrote %s", ", ".join(str(p) for p in files.values()))
    return files
