"""Forgetting withdrawn subjects (``harmonize forget``): over seeds, does a method forget as the oracle does?

For each seed, the embedded cohort (:func:`~harmonize.bundle.embedded_cohort.ensure_embedded_cohort`) gets a forget
list withdrawing a share of each site's training subjects (:func:`~harmonize.data.forget_list.mark_forget`, drawn
with the seed), an original brain-age model is trained on every training subject with fused site unlearning (no
augmentation, so that it fits its training subjects better than unseen ones), and
:func:`~harmonize.workflows.forget.forget_model` (what ``harmonize forget --oracle`` runs) makes it forget with
every method, then retrains the oracle from scratch without the withdrawn subjects. Each figure is taken within a
seed (a method against that seed's original or oracle), then averaged over the seeds with its 95 % t-interval.

Targets (issue #20), judged on the means over the seeds:

- the original remembers the withdrawn subjects: membership-inference AUC at least :data:`ORIGINAL_MIN_AUC`, and more
  than :data:`AUC_MARGIN` above the oracle's (otherwise forgetting has nothing to show);
- some method meets at once: membership AUC within :data:`AUC_MARGIN` of the oracle's, held-out age MAE at most
  :data:`MAE_RATIO` times the original's, and time at most :data:`TIME_FRACTION` of retraining (the oracle's), in
  CPU seconds of the process (what the work costs, whatever else runs on the machine) and in wall seconds;
- the site probe does not rise: at most :data:`PROBE_MARGIN` above the original's, or above chance where the
  original's is below it (a probe below chance reads no scanner; between two such figures there is only noise).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkResult, Column, Target, Workers, finish, with_intervals
from harmonize import defaults
from harmonize.audit.seed_summary import mean_interval
from harmonize.keys import ReconMethod

__all__ = ["CHECKS", "FIGURES", "METHODS", "ForgettingSettings", "run_forgetting"]

#: The methods compared (after the original and the oracle): every method of ``harmonize forget``.
METHODS: tuple[str, ...] = tuple(str(m) for m in (ReconMethod.FT, ReconMethod.GA, ReconMethod.GA_L1,
                                                  ReconMethod.GA_L1_FT, ReconMethod.NL, ReconMethod.NL_FT))
ORIGINAL, ORACLE = str(ReconMethod.ORIGINAL), str(ReconMethod.ORACLE)
#: Targets: membership AUC within this of the oracle's; held-out MAE at most this times the original's; time at
#: most this share of retraining; site probe at most this above the original's (or chance); the original's AUC at
#: least this.
AUC_MARGIN = 0.05
MAE_RATIO = 1.05
TIME_FRACTION = 0.20
PROBE_MARGIN = 0.05
ORIGINAL_MIN_AUC = 0.60
#: Rounding allowed when a mean is compared with its bound (a mean of ratios may differ from them in the last bit).
ROUNDING = 1e-9
#: Seeds of the full benchmark.
SEEDS = 3
#: Figures of a row, each averaged over the seeds with its interval: key, header, format.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("mia_auc", "membership AUC", ".3f"),
    ("auc_vs_oracle", "AUC - oracle", "+.3f"),
    ("forget_mae", "withdrawn MAE (y)", ".2f"),
    ("retain_mae", "retained MAE (y)", ".2f"),
    ("age_mae", "held-out MAE (y)", ".2f"),
    ("mae_vs_original", "held-out MAE / original", ".3f"),
    ("site_probe_bacc", "site probe", ".3f"),
    ("probe_vs_original", "probe - original", "+.3f"),
    ("probe_rise", "probe rise", "+.3f"),
    ("seconds", "seconds", ".1f"),
    ("time_vs_retrain", "wall time / retraining", ".3f"),
    ("cpu_seconds", "CPU seconds", ".1f"),
    ("cpu_time_vs_retrain", "CPU time / retraining", ".3f"),
)
#: Checks of a method's row, judged on the means over the seeds: key, label of its target.
CHECKS: tuple[tuple[str, str], ...] = (
    ("auc_ok", f"membership AUC within {AUC_MARGIN} of the oracle's"),
    ("mae_ok", f"held-out age MAE at most {MAE_RATIO:g}x the original's"),
    ("cpu_ok", f"time <= {TIME_FRACTION:.0%} of retraining (CPU seconds)"),
    ("wall_ok", f"time <= {TIME_FRACTION:.0%} of retraining (wall seconds)"),
)


@dataclass
class ForgettingSettings:
    """Sizes of the forgetting benchmark.

    Args:
        sites, subjects_per_site, shape: the embedded cohort (scanners, subjects per scanner, generated voxels).
        preprocess_shape, preprocess_spacing: what the networks see (voxels, mm).
        fraction: share of each site's training subjects withdrawn.
        epochs, lr: training epochs and Adam learning rate of the original and of the oracle.
        channels, feature_dim, batch_size: the brain-age network and its batches.
        methods: forgetting methods to run.
        seed: first seed; ``seeds`` seeds are run (``seed``, ``seed + 1``, ...): each draws its own forget list and
            trains its own original and oracle.
        seeds: number of seeds.
        forget: keyword overrides of :class:`~harmonize.workflows.forget.ForgetSettings` (the recipe; default:
            ``harmonize forget``'s defaults).
    """

    sites: int = defaults.SYNTH_SITES
    subjects_per_site: int = defaults.SYNTH_SUBJECTS_PER_SITE
    shape: int = defaults.SYNTH_SHAPE
    preprocess_shape: tuple[int, int, int] = defaults.DEMO_SHAPE
    preprocess_spacing: float = defaults.DEMO_SPACING
    fraction: float = defaults.FORGET_FRACTION
    epochs: int = 20
    lr: float = defaults.LEARNING_RATE
    channels: tuple[int, ...] = (16, 32, 32, 48, 48, 48)
    feature_dim: int = defaults.AGE_FEATURE_DIM
    batch_size: int = defaults.BATCH_SIZE
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    seeds: int = SEEDS
    forget: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_size(cls, size: str) -> ForgettingSettings:
        """``smallest`` (a test: 2 sites x 10 subjects at 16³, 2 epochs, 2 seeds), ``quick`` or ``full``."""
        if size == "full":
            return cls()
        tiny: dict[str, Any] = {"sites": 2, "subjects_per_site": 10, "shape": 24, "preprocess_shape": (16, 16, 16),
                                "preprocess_spacing": 12.0, "channels": (4, 8), "feature_dim": 8, "batch_size": 4,
                                "fraction": 0.2, "forget": {"bootstrap": 50}}
        if size == "smallest":
            return cls(epochs=2, seeds=2, methods=(str(ReconMethod.FT), str(ReconMethod.GA)), **tiny)
        return cls(epochs=3, **tiny)

    def training(self, seed: int, device: str = "cpu") -> Any:
        """The original's :class:`~harmonize.workflows.brain_age.BrainAgeSettings` (the oracle retrains with them)."""
        from harmonize.workflows.brain_age import BrainAgeSettings
        from harmonize.workflows.unlearning import UnlearningSettings

        return BrainAgeSettings(unlearning=UnlearningSettings(method="unlearning"), max_epochs=self.epochs,
                                channels=tuple(self.channels), feature_dim=self.feature_dim,
                                batch_size=self.batch_size, lr=self.lr, augment=False, seed=seed, device=device)

    def forgetting(self, seed: int, device: str = "cpu") -> Any:
        """The :class:`~harmonize.workflows.forget.ForgetSettings` of one seed (with the oracle retrained)."""
        from harmonize.workflows.forget import ForgetSettings

        return ForgetSettings(**{**self.forget, "oracle": True, "seed": seed, "device": device})


def run_forgetting(settings: ForgettingSettings | None = None, device: str = "cpu", work_dir: Path | None = None,
                   report: Callable[[str], None] = print, workers: Workers | None = None) -> BenchmarkResult:
    """Train an original and an oracle per seed, run every forgetting method, check the targets.

    Args:
        settings: sizes (default: the full benchmark).
        device: ``cpu`` or ``cuda``.
        work_dir: where the cohort, each seed's original (``original_seed<N>.pt``) and ``harmonize forget`` outputs
            (``seed<N>/``) are written (default: a temporary folder, removed after).
        report: where progress lines and the table are printed.
        workers: unused (its times, compared with retraining, need the machine alone: it runs in this process).

    Returns:
        Rows ``method`` (original, each method, oracle) with the means over the seeds of the :data:`FIGURES` and
        their intervals ``<key>_ci`` (``None`` with one seed), ``per_seed``, and, for the methods, the checks of
        :data:`CHECKS` and ``probe_ok`` on the means. The table prints the means with their intervals.
    """
    from harmonize.bundle.embedded_cohort import ensure_embedded_cohort
    from harmonize.data.forget_list import mark_forget
    from harmonize.data.manifest import read_manifest
    from harmonize.workflows.brain_age import train_brain_age
    from harmonize.workflows.forget import forget_model
    from harmonize.workflows.model_file import save_model

    settings = settings or ForgettingSettings()
    start = time.perf_counter()
    per_seed: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-forgetting-") as tmp:
        root = Path(work_dir) / "forgetting" if work_dir is not None else Path(tmp)
        manifest = ensure_embedded_cohort(root / "cohort", sites=settings.sites,
                                          subjects_per_site=settings.subjects_per_site, shape=settings.shape,
                                          seed=settings.seed, preprocess_shape=settings.preprocess_shape,
                                          preprocess_spacing=settings.preprocess_spacing)
        cohort = read_manifest(manifest)
        for seed in range(settings.seed, settings.seed + settings.seeds):
            frame = mark_forget(cohort, settings.fraction, seed=seed)
            frame.attrs.update(cohort.attrs)
            report(f"forgetting, seed {seed}: training the original ({settings.epochs} epochs)")
            original = train_brain_age(frame, settings.training(seed, device))
            if work_dir is not None:
                save_model(original, root / f"original_seed{seed}.pt")
            metrics = forget_model(original, frame, root / f"seed{seed}", settings.forgetting(seed, device),
                                   overwrite=True, methods=settings.methods, source=f"the seed-{seed} original",
                                   report=lambda line, s=seed: report(f"  seed {s}: {line.strip()}"))
            per_seed.append(seed_rows(metrics, original.seconds))
    rows = [over_seeds(list(method)) for method in zip(*per_seed, strict=True)]
    experiment = settings.forgetting(settings.seed)
    recipe = (f"FT {experiment.ft_epochs} epoch(s) at lr {experiment.learning_rate:g}, forget stage "
              f"{experiment.forget_epochs} epoch(s), GA lr {experiment.ga_learning_rate:g}"
              + ("" if experiment.loss_ceiling is None else f", GA loss ceiling {experiment.loss_ceiling:g}"))
    result = BenchmarkResult(
        name="forgetting",
        title="Forgetting withdrawn subjects (harmonize forget) against the original and the oracle",
        description=(
            f"The embedded cohort ({settings.sites} sites x {settings.subjects_per_site} subjects at "
            f"{settings.shape}³, preprocessed to {settings.preprocess_shape[0]}³ at {settings.preprocess_spacing:g} "
            f"mm), {100 * settings.fraction:g} % of each site's training subjects withdrawn (`mark_forget`, drawn "
            f"per seed) on {settings.seeds} seeds. Per seed, the original is `train_brain_age` with fused site "
            f"unlearning, network {tuple(settings.channels)}, {settings.epochs} epochs at lr {settings.lr:g}, no "
            "augmentation; "
            "`forget_model` (`harmonize forget --oracle`) runs each method from it "
            f"({recipe}) and retrains the oracle without the withdrawn subjects, with the original's settings. "
            "Membership AUC: the loss-threshold attack separating the withdrawn subjects' training scans from the "
            "held-out scans of the same sites. Within each seed: AUC against the oracle's, held-out MAE and site "
            "probe against the original's (probe rise: above the original's, or above chance where the original's "
            "is below it), time against retraining (the oracle's), in wall seconds and in CPU "
            "seconds of the process (the forgetting's stages and BatchNorm recalibration; the oracle's training, "
            "its reading of the scans included). Each figure is the mean over the seeds with its 95 % interval; "
            "the targets are judged on the means."
        ),
        columns=[
            Column("method", "method"),
            *[Column(key, header) for key, header, _ in FIGURES],
            Column("auc_ok", f"AUC within {AUC_MARGIN}"),
            Column("mae_ok", f"MAE <= {MAE_RATIO:g}x"),
            Column("cpu_ok", f"CPU time <= {TIME_FRACTION:.0%}"),
            Column("wall_ok", f"wall time <= {TIME_FRACTION:.0%}"),
        ],
        rows=[with_intervals(row, FIGURES) for row in rows],
        targets=targets(rows),
        settings={k: v for k, v in asdict(settings).items() if k not in ("sites", "subjects_per_site", "shape")},
    )
    return finish(result, start, report)


def seed_rows(metrics: Mapping[str, Any], original_seconds: float | None = None) -> list[dict[str, Any]]:
    """One seed's rows (original, methods, oracle) from :func:`~harmonize.workflows.forget.forget_model`'s figures.

    Args:
        metrics: what ``forget_model`` returned (run with the oracle).
        original_seconds: the original's training time (shown in its row; not a forgetting time).
    """
    models = metrics["models"]
    original, oracle = models[ORIGINAL], models[ORACLE]
    order = [ORIGINAL, *metrics["methods"], ORACLE]
    rows = []
    for name in order:
        m = models[name]
        seconds = original_seconds if name == ORIGINAL else m["seconds"]
        rows.append({
            "method": name,
            "mia_auc": m["mia_auc"],
            "auc_vs_oracle": m["mia_auc"] - oracle["mia_auc"],
            "forget_mae": m["forget_mae"],
            "retain_mae": m["retain_mae"],
            "age_mae": m["age_mae"],
            "mae_vs_original": m["age_mae"] / original["age_mae"],
            "site_probe_bacc": m["site_probe_bacc"],
            "chance": m.get("chance"),
            "probe_vs_original": m["site_probe_bacc"] - original["site_probe_bacc"],
            "probe_rise": _probe_rise(m, original),
            "seconds": seconds,
            "time_vs_retrain": _share(seconds if name != ORIGINAL else None, oracle["seconds"]),
            "cpu_seconds": m.get("cpu_seconds"),
            "cpu_time_vs_retrain": _share(m.get("cpu_seconds"), oracle.get("cpu_seconds")),
        })
    return rows


def _probe_rise(figures: Mapping[str, Any], original: Mapping[str, Any]) -> float:
    """How far a model's site probe lies above the original's, or above chance when the original's is below it."""
    floor = original["site_probe_bacc"]
    if figures.get("chance") is not None:
        floor = max(floor, figures["chance"])
    return figures["site_probe_bacc"] - floor


def _share(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


def over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """A method's row: each figure's mean over the seeds and its interval, and the checks on the means."""
    row: dict[str, Any] = {"method": per_seed[0]["method"], "per_seed": per_seed}
    for key, _, _ in FIGURES:
        row[key], row[f"{key}_ci"] = mean_interval([seed.get(key) for seed in per_seed])
    if row["method"] not in (ORIGINAL, ORACLE):
        row["auc_ok"] = _within(abs(row["auc_vs_oracle"]), AUC_MARGIN)
        row["mae_ok"] = _within(row["mae_vs_original"], MAE_RATIO)
        row["cpu_ok"] = _within(row["cpu_time_vs_retrain"], TIME_FRACTION)
        row["wall_ok"] = _within(row["time_vs_retrain"], TIME_FRACTION)
        row["probe_ok"] = _within(row["probe_rise"], PROBE_MARGIN)
    return row


def _within(value: float | None, bound: float) -> bool:
    """Whether a mean is at most its bound (up to :data:`ROUNDING`); ``False`` when not measured."""
    return value is not None and value <= bound + ROUNDING


def targets(rows: list[dict[str, Any]]) -> list[Target]:
    """The benchmark's targets from its rows (:func:`over_seeds`), each naming the methods that meet it."""
    by = {r["method"]: r for r in rows}
    found: list[Target] = []
    if ORIGINAL in by and ORACLE in by:
        auc, gap = by[ORIGINAL]["mia_auc"], by[ORIGINAL]["auc_vs_oracle"]
        found.append(Target(
            f"the original remembers the withdrawn subjects: membership AUC >= {ORIGINAL_MIN_AUC:.2f} and more than "
            f"{AUC_MARGIN} above the oracle's", auc >= ORIGINAL_MIN_AUC and gap > AUC_MARGIN,
            f"AUC {auc:.3f}, {gap:+.3f} from the oracle's {by[ORACLE]['mia_auc']:.3f}",
            "Missed: the original fits the withdrawn subjects hardly better than the oracle does, so the other "
            "targets show little (train the original longer)."))
    methods = [r for r in rows if "auc_ok" in r]
    for key, label in CHECKS:
        meeting = [r["method"] for r in methods if r[key]]
        closest = min(methods, key=lambda r: _distance(r, key)) if methods else None
        why = "" if meeting or closest is None else f"Missed: the closest method is {_shortfall(closest)}."
        found.append(Target(f"{label} (some method)", bool(meeting), ", ".join(meeting) or "no method", why))
    together = [r["method"] for r in methods if all(r[key] for key, _ in CHECKS)]
    why = "" if together else ("Missed because no method meets them all at once: "
                               + "; ".join(_shortfall(r) for r in methods) + ".")
    found.append(Target("all at once: AUC, held-out MAE, CPU and wall time (some method)", bool(together),
                        ", ".join(together) or "no method", why))
    rising = [r["method"] for r in methods if not r["probe_ok"]]
    found.append(Target(f"the site probe does not rise: at most {PROBE_MARGIN} above the original's, or chance "
                        "where the original's is below it (every method)",
                        not rising, "every method" if not rising else f"rises with {', '.join(rising)}",
                        "" if not rising else "Missed: " + "; ".join(
                            f"{r['method']} {r['probe_rise']:+.3f}" for r in methods if not r["probe_ok"])
                        + "."))
    return found


def _distance(row: Mapping[str, Any], key: str) -> float:
    """How far a row is from meeting one check (for naming the closest method)."""
    value = {"auc_ok": abs(row["auc_vs_oracle"]), "mae_ok": row["mae_vs_original"],
             "cpu_ok": row["cpu_time_vs_retrain"], "wall_ok": row["time_vs_retrain"]}[key]
    return math.inf if value is None else value


def _shortfall(row: Mapping[str, Any]) -> str:
    times = [f"{100 * row[key]:.1f}% of retraining's {what}" for key, what in
             (("cpu_time_vs_retrain", "CPU time"), ("time_vs_retrain", "wall time")) if row.get(key) is not None]
    return (f"{row['method']} AUC {row['auc_vs_oracle']:+.3f} from the oracle, held-out MAE "
            f"{row['mae_vs_original']:.3f}x the original's, {', '.join(times) or 'time n/a'}")
