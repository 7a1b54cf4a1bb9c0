"""Efficacy: does unlearning remove the scanner where it does harm, on every seed, and keep age?

Each scenario is an embedded cohort generated and preprocessed as the demo does
(:func:`harmonize.data.synth.generate_cohort`, :func:`harmonize.data.preprocess.preprocess_manifest`), then
compared exactly as ``harmonize compare --seeds N`` compares methods
(:func:`~harmonize.workflows.compare.compare_methods` with the demo's
:meth:`~harmonize.workflows.demo.DemoSettings.compare_settings`): every method trains on each seed, the last site is
kept out as an unseen scanner, and the held-out scans of the training sites are audited.

Scenarios:

- ``balanced``: every site spans most of the age range (the demo's top level);
- ``biased``: the sites' training subjects lie in age windows that overlap their neighbour's by half, while the
  held-out subjects span every age (the demo's ``biased`` scenario), so reading age from the scanner does harm;
- ``biased_in_window``: the same sites, with the held-out subjects in their site's window too (a random split of a
  biased cohort), where reading age from the scanner *helps* the held-out scans: what removing the scanner costs;
- ``control``: the negative control, identical scanners (``site_effect=0``): unlearning must cost nothing.

Targets (issue #16) for each unlearning method, per scenario: on every seed the site probe given the features and
age & sex (``site_probe_conditional``) is within 0.05 of its floor (the probe given age and sex alone), and the
per-site bias spread is below the baseline's; as means over seeds, age MAE is at most 1.05x the baseline's and the
unseen-scanner MAE not above it. In ``biased`` the baseline must show the harm: its conditional probe at least 0.15
above the floor on every seed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkResult, Column, Target, Workers, finish, with_intervals
from harmonize.keys import Method

__all__ = ["SCENARIOS", "EfficacySettings", "prepare_cohort", "run_efficacy", "scenario_targets"]

#: Scenario name -> the :class:`~harmonize.data.synth.SynthConfig` fields that make it.
SCENARIOS: dict[str, dict[str, Any]] = {
    "balanced": {},
    "biased": {"biased": True, "biased_splits": ("train",)},
    "biased_in_window": {"biased": True},
    "control": {"site_effect": 0.0},
}
#: The methods whose figures the targets check (the baseline is ``none``).
UNLEARNING_METHODS = (Method.UNLEARNING, Method.ERASURE, Method.UNLEARNING_ERASURE)
#: The site probe given the features and age & sex at most this far above the floor (age & sex alone) on every seed.
FLOOR_MARGIN = 0.05
#: Age MAE at most this many times the baseline's (mean over seeds).
MAE_RATIO = 1.05
#: In the biased scenario the baseline's conditional probe is at least this far above the floor on every seed (the
#: harm).
HARM_MARGIN = 0.15
#: Figures of a row: (metrics key, header, format).
FIGURES = (("site_probe_bacc", "site probe", ".3f"), ("site_probe_floor", "floor", ".3f"),
           ("site_probe_conditional", "conditional", ".3f"), ("age_mae", "age MAE (y)", ".2f"),
           ("unseen_site_mae", "unseen-site MAE (y)", ".2f"), ("site_bias_spread", "site bias spread (y)", ".2f"))


@dataclass
class EfficacySettings:
    """Sizes of the efficacy benchmark (defaults: the demo's cohort, network and audit).

    Args:
        demo: keyword overrides of :class:`~harmonize.workflows.demo.DemoSettings` (cohort, preprocessing, network).
        scenarios: which of :data:`SCENARIOS` to run.
        methods: methods to compare (``none`` first).
        seeds: seeds of every method.
    """

    demo: dict[str, Any] | None = None
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    methods: tuple[str, ...] = (Method.NONE, *UNLEARNING_METHODS, Method.COMBAT)
    seeds: int = 3

    @classmethod
    def for_size(cls, size: str) -> EfficacySettings:
        """``smallest`` (a test: the quick demo's sizes, balanced, 2 seeds), ``quick`` or ``full``."""
        if size in ("smallest", "quick"):
            return cls(demo={"quick": True}, scenarios=("balanced",) if size == "smallest" else tuple(SCENARIOS),
                       methods=(Method.NONE, Method.UNLEARNING, Method.ERASURE), seeds=2)
        return cls()

    def demo_settings(self, jobs: int) -> Any:
        from harmonize.workflows.demo import DemoSettings

        overrides = dict(self.demo or {})
        base = DemoSettings.quick() if overrides.pop("quick", False) else DemoSettings()
        return replace(base, seeds=self.seeds, jobs=jobs, recon=False, **overrides)


def run_efficacy(settings: EfficacySettings | None = None, device: str = "cpu", work_dir: Path | None = None,
                 report: Callable[[str], None] = print, workers: Workers | None = None) -> BenchmarkResult:
    """Compare the methods on every scenario over seeds; one row per scenario and method, and the targets.

    Args:
        settings: sizes (default: the full benchmark, the demo's sizes).
        device: ``cpu`` or ``cuda``.
        work_dir: where the cohorts and comparisons are written (default: a temporary folder, removed after).
        report: where progress lines and the table are printed.
        workers: parallel training runs (``workers.jobs``) of each comparison.
    """
    settings = settings or EfficacySettings()
    workers = workers or Workers()
    demo = settings.demo_settings(workers.jobs)
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-efficacy-") as tmp:
        root = Path(work_dir) / "efficacy" if work_dir is not None else Path(tmp)
        for scenario in settings.scenarios:
            metrics = _scenario(root / scenario, scenario, settings, demo, device, report)
            rows += [_row(scenario, method, metrics) for method in settings.methods if method in metrics]
    targets = [t for scenario in settings.scenarios
               for t in scenario_targets(scenario, [r for r in rows if r["scenario"] == scenario])]
    result = BenchmarkResult(
        name="efficacy",
        title="Efficacy: the scanner's harm, and what each method leaves of it, over seeds",
        description=(
            f"`harmonize compare` with the demo's settings ({demo.sites} sites x {demo.subjects_per_site} subjects at "
            f"{demo.shape}³, preprocessed to {demo.preprocess_shape[0]}³ at {demo.preprocess_spacing:g} mm; network "
            f"{demo.channels}, {demo.max_epochs} epochs, taps {list(demo.taps)}; the last site unseen) on "
            f"{settings.seeds} seeds per method, {workers.jobs} training runs at a time. Scenarios: balanced (every "
            "site spans most ages), biased (training ages in windows overlapping the neighbour's by half, held-out "
            "subjects of every age), biased_in_window (the same windows for the held-out subjects), control "
            "(identical scanners). Each figure is the mean over seeds with its 95 % "
            "interval; `probe - floor` lists every seed's site probe given the features and age & sex (`conditional`) "
            "above the probe of age and sex alone (`floor`): the scanner information beyond biology."
        ),
        columns=[Column("scenario", "scenario"), Column("method", "method"),
                 *[Column(key, header) for key, header, _ in FIGURES],
                 Column("probe_minus_floor", "probe - floor per seed"), Column("mae_ratio", "MAE / none's", ".2f")],
        rows=[_shown(row) for row in rows],
        targets=targets,
        settings={**asdict(settings), "demo": asdict(demo)},
    )
    return finish(result, start, report)


def _scenario(folder: Path, scenario: str, settings: EfficacySettings, demo: Any, device: str,
              report: Callable[[str], None]) -> dict[str, Any]:
    """Generate and preprocess one scenario's cohort, then compare the methods on it (``compare_methods``)."""
    from harmonize.data.synth import SynthConfig, held_out_split
    from harmonize.workflows.compare import compare_methods

    synth = SynthConfig(n_sites=demo.sites, subjects_per_site=demo.subjects_per_site, shape=demo.shape,
                        seed=demo.seed, biased_overlap=demo.biased_overlap,
                        **held_out_split(demo.held_out_fraction), **SCENARIOS[scenario])
    prepared = prepare_cohort(folder, synth, demo.preprocess_shape, demo.preprocess_spacing)
    compare = demo.compare_settings()
    compare = replace(compare, methods=settings.methods, first_seed_only=(),
                      training=replace(compare.training, device=device))
    report(f"efficacy {scenario}: {len(settings.methods)} methods x {settings.seeds} seeds")
    return compare_methods(prepared, folder / "compare", compare, report=lambda line: report(f"  {line}"),
                           overwrite=True)


def prepare_cohort(folder: Path, synth: Any, shape: tuple[int, int, int], spacing: float) -> Path:
    """Generate a cohort into ``folder/cohort`` and preprocess it into ``folder/preprocessed``; the new manifest."""
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest
    from harmonize.data.synth import generate_cohort

    manifest = generate_cohort(folder / "cohort", synth, overwrite=True)
    config = PreprocessConfig(target_spacing=spacing, target_shape=shape)
    return preprocess_manifest(manifest, folder / "preprocessed", config, overwrite=True, progress=False).manifest


def _row(scenario: str, method: str, metrics: dict[str, Any]) -> dict[str, Any]:
    entry, none = metrics[method], metrics[Method.NONE]
    row: dict[str, Any] = {"scenario": scenario, "method": method, "chance": metrics.get("chance")}
    for key, _, _ in FIGURES:
        row[key], row[f"{key}_ci"] = entry.get(key), entry.get(f"{key}_ci")
    per_seed = entry.get("per_seed") or [entry]
    row["per_seed"] = [{key: seed.get(key) for key, _, _ in FIGURES} for seed in per_seed]
    row["mae_ratio"] = entry["age_mae"] / none["age_mae"] if none.get("age_mae") else None
    return row


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the table prints it: means with their intervals, and every seed's probe above its floor."""
    shown = with_intervals(row, FIGURES)
    shown["probe_minus_floor"] = ", ".join(f"{d:+.3f}" for d in _probe_above_floor(row)) or "—"
    return shown


def _probe_above_floor(row: dict[str, Any]) -> list[float]:
    """Per seed, what the features tell about the site beyond age and sex: the conditional probe minus the floor."""
    return [s["site_probe_conditional"] - s["site_probe_floor"] for s in row["per_seed"]
            if s.get("site_probe_conditional") is not None and s.get("site_probe_floor") is not None]


def scenario_targets(scenario: str, rows: list[dict[str, Any]]) -> list[Target]:
    """The issue's targets for one scenario's rows (``none`` is the baseline; ComBat is shown, not judged)."""
    by = {row["method"]: row for row in rows}
    none = by.get(Method.NONE)
    if none is None:
        return []
    targets = []
    if scenario == "biased":
        gaps = _probe_above_floor(none)
        targets.append(Target(f"{scenario}: none's probe >= floor + {HARM_MARGIN:g} on every seed (the harm shown)",
                              bool(gaps) and min(gaps) >= HARM_MARGIN,
                              "probe - floor " + ", ".join(f"{g:+.3f}" for g in gaps),
                              "" if gaps and min(gaps) >= HARM_MARGIN else
                              "Missed: the baseline's features read the scanner little beyond what age tells."))
    for method in UNLEARNING_METHODS:
        row = by.get(method)
        if row is None:
            continue
        seeds = list(zip(row["per_seed"], none["per_seed"]))
        near = sum(gap <= FLOOR_MARGIN for gap in _probe_above_floor(row))
        # a seed without a spread (no age two sites share) is not judged
        below = sum(s.get("site_bias_spread") is None or b.get("site_bias_spread") is None
                    or s["site_bias_spread"] < b["site_bias_spread"] for s, b in seeds)
        mae_ok = row["mae_ratio"] is not None and row["mae_ratio"] <= MAE_RATIO
        unseen, unseen_none = row.get("unseen_site_mae"), none.get("unseen_site_mae")
        unseen_ok = unseen is None or unseen_none is None or unseen <= unseen_none
        # the control has no scanner to remove: there unlearning must only cost nothing
        costless = scenario == "control"
        met = (costless or near == len(seeds) and below == len(seeds)) and mae_ok and unseen_ok
        reasons = []
        if near < len(seeds) and not costless:
            reasons.append(f"the probe is more than {FLOOR_MARGIN:g} above its floor on {len(seeds) - near} of "
                           f"{len(seeds)} seeds")
        if below < len(seeds) and not costless:
            reasons.append(f"the site bias spread is not below none's on {len(seeds) - below} seeds")
        if not mae_ok:
            reasons.append(f"age MAE is {row['mae_ratio']:.2f}x none's")
        if not unseen_ok:
            reasons.append(f"the unseen-site MAE {unseen:.2f} y is above none's {unseen_none:.2f} y")
        measured = (f"near floor {near}/{len(seeds)}, spread below {below}/{len(seeds)}, MAE {row['mae_ratio']:.2f}x"
                    + ("" if unseen is None or unseen_none is None else f", unseen {unseen:.2f} vs {unseen_none:.2f} y"))
        claim = "costs nothing:" if costless else "removes the site on every seed,"
        targets.append(Target(
            f"{scenario}: {method} {claim} MAE <= {MAE_RATIO:g}x none, unseen <= none",
            met, measured, ("Missed: " + "; ".join(reasons) + ".") if reasons else ""))
    return targets
