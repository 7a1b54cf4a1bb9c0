"""The main job on the embedded cohort: generate, validate, preprocess, train with and without unlearning, audit.

``harmonize demo --out DIR`` runs :func:`run_demo`. Every stage calls the same library functions a user calls
(``generate_cohort``, ``validate_manifest``, ``preprocess_manifest``, ``train_brain_age``,
``evaluate_brain_age``), and writes its outputs under ``DIR``:

- ``cohort/``: the synthetic multi-site cohort (NIfTI, ``manifest.csv``, ``cohort.json``);
- ``preprocessed/``: the per-site preprocessed scans and their manifest;
- ``recon/``: the reconstruction-unlearning experiment (tables and Pareto plots);
- ``metrics.json``: for each method (``none``, ``unlearning``, ``dann``, ``combat``) the site-probe balanced
  accuracy, the age MAE and the other audit figures, plus ``chance``, and ``recon`` (one entry per
  reconstruction-unlearning method with ``bta_psnr``, ``kta_psnr``, ``ua_psnr``, ``seconds``);
- ``report.html``: the comparison tables and figures, self-contained.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harmonize import defaults
from harmonize.errors import HarmonizeError
from harmonize.io import write_json_atomic
from harmonize.keys import Method

__all__ = ["DemoSettings", "run_demo"]

logger = logging.getLogger(__name__)

#: Name of the metrics file the demo writes.
METRICS_FILE = "metrics.json"
#: Figures of each reconstruction-unlearning method copied into ``metrics.json``.
RECON_KEYS = ("bta_psnr", "kta_psnr", "ua_psnr", "bta_ssim", "kta_ssim", "ua_ssim", "seconds")


@dataclass
class DemoSettings:
    """Sizes of the demo. The defaults finish in under 15 minutes on 2 CPU cores; ``quick()`` in about one.

    Args:
        sites: scanners of the embedded cohort.
        subjects_per_site: subjects scanned on each.
        shape: cubic shape of the generated scans.
        preprocess_shape: shape after preprocessing (what the networks see).
        preprocess_spacing: isotropic voxel size after preprocessing (mm).
        max_epochs: training epochs of each brain-age model.
        channels: the brain-age encoder's channels.
        norm: the brain-age encoder's normalisation.
        methods: training methods to compare.
        combat: also harmonise the baseline's features with ComBat (needs ``none`` among the methods).
        taps: layers of the brain-age network that are unlearned and audited.
        recon: also run the reconstruction-unlearning experiment (Xue et al.) and report it.
        recon_quick: the tiny reconstruction settings (for tests; its numbers are not meaningful).
        beta: confusion weight of the unlearning run.
        dann_beta: gradient-reversal strength of the DANN run.
        warmup_epochs: epochs during which only the domain heads learn.
        seed: seed of everything.
    """

    sites: int = defaults.SYNTH_SITES
    subjects_per_site: int = defaults.SYNTH_SUBJECTS_PER_SITE
    shape: int = defaults.SYNTH_SHAPE
    preprocess_shape: tuple[int, int, int] = defaults.DEMO_SHAPE
    preprocess_spacing: float = defaults.DEMO_SPACING
    max_epochs: int = defaults.DEMO_EPOCHS
    channels: tuple[int, ...] = defaults.DEMO_CHANNELS
    norm: str | tuple = defaults.AGE_NORM
    methods: tuple[str, ...] = (Method.NONE, Method.UNLEARNING, Method.DANN)
    combat: bool = True
    taps: tuple[str, ...] = defaults.DEMO_TAPS
    recon: bool = True
    recon_quick: bool = False
    beta: float = defaults.BETA
    dann_beta: float = defaults.DANN_BETA
    warmup_epochs: int = defaults.WARMUP_EPOCHS
    seed: int = defaults.SEED

    @classmethod
    def quick(cls) -> DemoSettings:
        """A demo small enough for a test: 3 sites x 12 subjects, 3 epochs (1 of warm-up)."""
        return cls(sites=3, subjects_per_site=12, shape=32, preprocess_shape=(32, 32, 32), max_epochs=3,
                   warmup_epochs=1, channels=(8, 8, 8, 16, 16), recon_quick=True)


def _stage(name: str, report: Callable[[str], None]) -> Callable:
    def wrap(fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        report(f"[{name}] ...")
        result = fn()
        report(f"[{name}] done in {time.perf_counter() - start:.1f} s")
        return result

    return wrap


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, overwrite: bool = False,
             report: Callable[[str], None] = logger.info) -> dict[str, Any]:
    """Run the whole demo into ``out_dir`` and return the metrics it wrote to ``metrics.json``.

    Args:
        out_dir: where everything goes; must be empty or absent unless ``overwrite``.
        settings: sizes of the demo.
        overwrite: allow an existing, non-empty ``out_dir`` (its cohort is regenerated).
        report: where progress lines go (the CLI prints them).
    """
    from harmonize.data.manifest import validate_manifest
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest
    from harmonize.data.synth import SynthConfig, generate_cohort
    from harmonize.workflows.brain_age import (
        BrainAgeSettings,
        brain_age_features,
        evaluate_brain_age,
        evaluate_combat,
        train_brain_age,
    )
    from harmonize.workflows.unlearning import UnlearningSettings

    settings = settings or DemoSettings()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise HarmonizeError(f"Output directory {out} is not empty. Choose another --out, or pass --overwrite.")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    synth = SynthConfig(n_sites=settings.sites, subjects_per_site=settings.subjects_per_site,
                        shape=settings.shape, seed=settings.seed)
    manifest = _stage("cohort", report)(lambda: generate_cohort(out / "cohort", synth, overwrite=overwrite))
    validation = _stage("validate", report)(lambda: validate_manifest(manifest))
    report(validation.format())
    if not validation.ok:
        raise HarmonizeError(f"The generated cohort failed validation ({manifest}); this is a bug, please report it.")
    config = PreprocessConfig(target_spacing=settings.preprocess_spacing, target_shape=settings.preprocess_shape)
    prep = _stage("preprocess", report)(
        lambda: preprocess_manifest(manifest, out / "preprocessed", config, overwrite=overwrite)
    )
    report(f"preprocessed {prep.processed} scans, {prep.cached} from cache")

    metrics: dict[str, Any] = {}
    features: dict[str, Any] = {}
    histories: dict[str, list] = {}
    baseline = None
    for method in settings.methods:
        beta = settings.dann_beta if method == Method.DANN else settings.beta
        unlearning = UnlearningSettings(method=method, beta=beta, warmup_epochs=settings.warmup_epochs)
        run = BrainAgeSettings(unlearning=unlearning, max_epochs=settings.max_epochs, channels=settings.channels,
                               norm=settings.norm, taps=settings.taps, seed=settings.seed,
                               batch_size=_batch_size(settings.sites))
        model = _stage(f"train {method}", report)(lambda: train_brain_age(prep.manifest, run, progress=True))
        baseline = model if method == Method.NONE else baseline
        features[str(method)] = brain_age_features(model, prep.manifest)
        metrics[str(method)] = evaluate_brain_age(model, prep.manifest, seed=settings.seed,
                                                  features=features[str(method)])
        histories[str(method)] = model.history
        _report_method(report, str(method), metrics[str(method)])
    if settings.combat and baseline is not None:
        metrics[str(Method.COMBAT)] = _stage("combat", report)(
            lambda: evaluate_combat(baseline, prep.manifest, seed=settings.seed))
        _report_method(report, str(Method.COMBAT), metrics[str(Method.COMBAT)])
    recon_table = None
    if settings.recon:
        recon = _stage("reconstruction unlearning", report)(lambda: _run_recon(out, settings))
        recon_table = recon.table
        metrics["recon"] = {row["method"]: {k: row.get(k) for k in RECON_KEYS} for row in recon.table}
        for row in recon.table:
            report(f"  {row['method']}: retain-test {row['bta_psnr']:.2f} dB, forget-test {row['kta_psnr']:.2f} dB, "
                   f"forget-train {row['ua_psnr']:.2f} dB, {row['seconds']:.1f} s")
    metrics["chance"] = 1.0 / settings.sites
    metrics["settings"] = asdict(settings)
    metrics["seconds"] = time.perf_counter() - started
    path = out / METRICS_FILE
    write_json_atomic(path, metrics, indent=2, default=str)
    report(f"metrics written to {path}")
    html = _stage("report", report)(lambda: _write_report(out, metrics, features, histories, settings, recon_table))
    report(f"report written to {html}")
    return metrics


def _report_method(report: Callable[[str], None], method: str, m: dict[str, Any]) -> None:
    report(f"  {method}: site probe {m['site_probe_bacc']:.3f} (chance {m['chance']:.3f}), "
           f"age MAE {m['age_mae']:.2f} y, age R2 from features {m['age_probe_r2']:.2f}")


def _run_recon(out: Path, settings: DemoSettings):
    from harmonize.workflows.recon_unlearning import ReconUnlearningSettings, run_recon_unlearning

    recon = ReconUnlearningSettings.tiny() if settings.recon_quick else ReconUnlearningSettings.demo()
    return run_recon_unlearning(replace(recon, seed=settings.seed), out / "recon")


def _write_report(out: Path, metrics: dict[str, Any], features: dict[str, Any], histories: dict[str, list],
                  settings: DemoSettings, recon_table: list[dict[str, Any]] | None) -> Path:
    """Plots and the self-contained report.html of the comparison."""
    from harmonize.audit import plots
    from harmonize.audit.report import write_comparison_table, write_report

    methods = {k: v for k, v in metrics.items() if isinstance(v, dict) and "site_probe_bacc" in v}
    chance = metrics["chance"]
    figures = out / "figures"
    pngs = {
        "Site probe and age error": plots.comparison_bar_plot(methods, figures / "comparison.png", chance=chance),
        "Age error per site": plots.per_site_error_plot(methods, figures / "per_site_error.png"),
        "Features of held-out scans": plots.embedding_grid(features, figures / "embeddings.png",
                                                           seed=settings.seed),
    }
    trained = {k: h for k, h in histories.items() if h}
    if trained:
        pngs["Domain head during training"] = plots.training_curves_plot(trained, figures / "training.png",
                                                                          chance=chance)
    write_comparison_table(methods, out / "comparison.md", out / "comparison.json", chance=chance)
    notes = [
        f"Embedded cohort: {settings.sites} simulated scanners x {settings.subjects_per_site} subjects, "
        f"brain age from {settings.preprocess_shape[0]}^3 scans; held-out scans (val + test) audited.",
        "Site probe: cross-validated logistic regression on the network's features; near chance means the "
        "scanner cannot be read from them. Age R2: ridge regression of age on the same features.",
    ]
    if recon_table:
        pngs["Reconstruction unlearning: retain PSNR vs time"] = out / "recon" / "pareto_seconds.png"
        notes.append("Reconstruction unlearning (Xue et al.): PSNR on retain-test (BTA), forget-test (KTA) and "
                     "forget-train (UA); forgetting means KTA/UA fall towards the oracle's while BTA stays.")
    return write_report(out, methods, chance, plots=pngs, recon_table=recon_table,
                        title="harmonize demo: scanner unlearning and machine unlearning", notes=notes)


def _batch_size(sites: int) -> int:
    """The smallest multiple of the number of sites that is at least the default batch size."""
    per_site = max(1, -(-defaults.BATCH_SIZE // sites))
    return per_site * sites
