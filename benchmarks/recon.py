"""Reconstruction unlearning (Xue et al., "Erase to Enhance"): how close does each method come to the oracle?

Runs :func:`harmonize.workflows.recon_unlearning.run_recon_unlearning` (settings
:meth:`~harmonize.workflows.recon_unlearning.ReconUnlearningSettings.tiny` / ``.demo()`` / ``.benchmark()``, the
methods restricted to FT, GA-L1-FT, NL and NL-FT and no retain-fraction sweep) on several seeds and checks each
method against the targets of issues #8 and #20, on the mean over the seeds: forget PSNR (forget-test KTA and
forget-train UA) within 0.5 dB of the oracle's, retain PSNR (BTA) within 0.3 dB of the original's, in at most 10 %
of the oracle's time. Time is judged twice: in training iterations (independent of the machine) and in wall
seconds (what a user waits; on a shared machine it varies with the load); the CPU seconds of the process over the
same stages are shown beside them. A method's time and the oracle's are measured alike: the stages' own work
(building each stage's trainer and optimiser, training), not copying the model nor evaluating it. Each difference is taken within a seed (the method against that
seed's original or oracle), then averaged, with its 95 % t-interval over the seeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkResult, Column, Target, Workers, finish, with_intervals
from harmonize.audit.seed_summary import mean_interval
from harmonize.keys import ReconMethod

__all__ = ["METHODS", "ReconSettings", "run_recon"]

#: Unlearning methods compared (after the original and the oracle).
METHODS: tuple[str, ...] = (ReconMethod.FT, ReconMethod.GA_L1_FT, ReconMethod.NL, ReconMethod.NL_FT)
#: Targets: forget PSNR within this of the oracle's (dB), retain PSNR within this of the original's (dB), time at
#: most this fraction of the oracle's.
FORGET_MARGIN_DB = 0.5
RETAIN_MARGIN_DB = 0.3
TIME_FRACTION = 0.10
#: Rounding allowed when a share is compared with ``TIME_FRACTION`` (60 of 600 iterations is 10 %).
ROUNDING = 1e-9
#: Named settings of the experiment.
PROFILES = ("tiny", "demo", "benchmark")
#: Seeds of the demo and benchmark profiles (the tiny one runs the same number unless told otherwise).
SEEDS = 3
#: Figures of a row, each averaged over the seeds with its interval: key, header, format.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("bta_psnr", "BTA", ".2f"),
    ("kta_psnr", "KTA", ".2f"),
    ("ua_psnr", "UA", ".2f"),
    ("bta_vs_original", "BTA - original", "+.2f"),
    ("kta_vs_oracle", "KTA - oracle", "+.2f"),
    ("ua_vs_oracle", "UA - oracle", "+.2f"),
    ("iterations", "iterations", ".0f"),
    ("iterations_vs_oracle", "iterations / oracle", ".3f"),
    ("seconds", "seconds", ".1f"),
    ("time_vs_oracle", "wall time / oracle", ".3f"),
    ("cpu_seconds", "CPU seconds", ".1f"),
    ("cpu_time_vs_oracle", "CPU time / oracle", ".3f"),
)
#: Checks of a method's row, judged on the means over the seeds: key, label of its target.
CHECKS: tuple[tuple[str, str], ...] = (
    ("forget_ok", f"forget PSNR (KTA and UA) within {FORGET_MARGIN_DB} dB of the oracle's"),
    ("retain_ok", f"retain PSNR (BTA) within {RETAIN_MARGIN_DB} dB of the original's"),
    ("time_ok", f"time <= {TIME_FRACTION:.0%} of the oracle's (training iterations)"),
    ("wall_ok", f"time <= {TIME_FRACTION:.0%} of the oracle's (wall seconds)"),
)


@dataclass
class ReconSettings:
    """Which settings of the experiment to run.

    Args:
        profile: ``tiny`` (seconds, numbers not meaningful), ``demo`` (the demo's, minutes) or ``benchmark``
            (hours on a CPU).
        methods: unlearning methods to run.
        seed: first seed of the experiment.
        seeds: number of seeds (``seed``, ``seed + 1``, ...); the targets are judged on the means.
    """

    profile: str = "demo"
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    seeds: int = SEEDS

    @classmethod
    def for_size(cls, size: str) -> ReconSettings:
        """``smallest``: the tiny settings on 2 seeds; ``quick``: tiny on 3; ``full``: the demo's on 3."""
        if size == "full":
            return cls(profile="demo")
        return cls(profile="tiny", seeds=2 if size == "smallest" else SEEDS)

    def experiment(self, device: str = "cpu") -> Any:
        """The :class:`~harmonize.workflows.recon_unlearning.ReconUnlearningSettings` to run."""
        from harmonize.workflows.recon_unlearning import ReconUnlearningSettings

        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)}, got {self.profile!r}.")
        base = getattr(ReconUnlearningSettings, self.profile)()
        return replace(base, methods=tuple(self.methods), fractions=(), fraction_methods=(), seed=self.seed,
                       seeds=self.seeds, device=device)


def run_recon(settings: ReconSettings | None = None, device: str = "cpu", work_dir: Path | None = None,
              report: Callable[[str], None] = print, workers: Workers | None = None) -> BenchmarkResult:
    """Run the experiment and check every method against the targets.

    Args:
        settings: which experiment (default: the demo's).
        device: ``cpu`` or ``cuda``.
        work_dir: where the experiment's own tables and plots are written (default: nowhere).
        report: where the table is printed.
        workers: unused (its times, compared with the oracle's, need the machine alone: it runs in this process).

    Returns:
        Rows ``method``, the means over the seeds of ``bta_psnr``, ``kta_psnr``, ``ua_psnr``, ``bta_vs_original``,
        ``kta_vs_oracle``, ``ua_vs_oracle`` (dB differences within each seed), ``iterations``,
        ``iterations_vs_oracle``, ``seconds``, ``time_vs_oracle`` (wall), ``cpu_seconds``,
        ``cpu_time_vs_oracle``, each with its interval ``<key>_ci`` (``None`` with one seed), ``per_seed`` (each
        seed's figures), and ``retain_ok``, ``forget_ok``, ``time_ok`` (iterations), ``wall_ok`` (wall seconds)
        (judged on the means; absent for the original and the oracle). The table prints the means
        with their intervals.
    """
    from harmonize.workflows.recon_unlearning import run_recon_unlearning

    settings = settings or ReconSettings()
    start = time.perf_counter()
    experiment = settings.experiment(device)
    out = Path(work_dir) / "recon" if work_dir is not None else None
    per_seed = run_recon_unlearning(experiment, out).per_seed
    rows = [_over_seeds(list(method)) for method in zip(*(_seed_rows(table) for table in per_seed), strict=True)]
    result = BenchmarkResult(
        name="recon",
        title="Reconstruction unlearning against the original and the oracle",
        description=(
            f"`run_recon_unlearning` with `ReconUnlearningSettings.{settings.profile}()` on {settings.seeds} seeds "
            f"({experiment.data.size}² slices, "
            f"{experiment.data.retain_train_volumes} retain / {experiment.data.forget_train_volumes} forget training volumes x "
            f"{experiment.data.slices_per_volume} slices, {experiment.network}, original and oracle "
            f"{experiment.original_epochs} / {experiment.oracle_epochs} epochs, FT variants on "
            f"{100 * experiment.unlearning.retain_fraction:g}% of the retain set). PSNR in dB per volume: BTA = retain-test, "
            "KTA = forget-test, UA = forget-train. Differences within each seed: BTA against the original's, KTA and "
            "UA against the oracle's; time against the oracle's (retraining from scratch), in training iterations "
            "and in wall seconds (both judged), and in CPU seconds of the process (shown), each over the stages' own "
            "work (trainer and optimiser set-up and training; not copying the model nor evaluating it), the same "
            "for the oracle and every method. Each figure is the mean over the seeds with its 95 % interval; "
            "the targets are judged on the means."
        ),
        columns=[
            Column("method", "method"),
            *[Column(key, header) for key, header, _ in FIGURES],
            Column("retain_ok", f"retain within {RETAIN_MARGIN_DB} dB"),
            Column("forget_ok", f"forget within {FORGET_MARGIN_DB} dB"),
            Column("time_ok", f"iterations <= {TIME_FRACTION:.0%}"),
            Column("wall_ok", f"wall time <= {TIME_FRACTION:.0%}"),
        ],
        rows=[with_intervals(row, FIGURES) for row in rows],
        targets=_targets(rows),
        settings=asdict(settings),
    )
    return finish(result, start, report)


def _seed_rows(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One seed's rows with the differences against that seed's original and oracle."""
    by = {r["method"]: r for r in table}
    original, oracle = by[ReconMethod.ORIGINAL], by[ReconMethod.ORACLE]
    rows = []
    for r in table:
        rows.append({
            "method": str(r["method"]), "bta_psnr": r["bta_psnr"], "kta_psnr": r["kta_psnr"], "ua_psnr": r["ua_psnr"],
            "bta_vs_original": r["bta_psnr"] - original["bta_psnr"],
            "kta_vs_oracle": r["kta_psnr"] - oracle["kta_psnr"],
            "ua_vs_oracle": r["ua_psnr"] - oracle["ua_psnr"],
            "iterations": r["iterations"],
            "iterations_vs_oracle": r["iterations"] / oracle["iterations"] if oracle["iterations"] else None,
            "seconds": r["seconds"],
            "time_vs_oracle": r["seconds"] / oracle["seconds"] if oracle["seconds"] > 0 else None,
            "cpu_seconds": r.get("cpu_seconds"),
            "cpu_time_vs_oracle": (r["cpu_seconds"] / oracle["cpu_seconds"]
                                   if r.get("cpu_seconds") is not None and oracle.get("cpu_seconds") else None),
        })
    return rows


def _over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """A method's row: each figure's mean over the seeds and its interval, and the checks on the means."""
    row: dict[str, Any] = {"method": per_seed[0]["method"], "per_seed": per_seed}
    for key, _, _ in FIGURES:
        row[key], row[f"{key}_ci"] = mean_interval([seed[key] for seed in per_seed])
    if row["method"] not in (ReconMethod.ORIGINAL, ReconMethod.ORACLE):
        row["retain_ok"] = abs(row["bta_vs_original"]) <= RETAIN_MARGIN_DB
        row["forget_ok"] = (abs(row["kta_vs_oracle"]) <= FORGET_MARGIN_DB
                            and abs(row["ua_vs_oracle"]) <= FORGET_MARGIN_DB)
        share = row["iterations_vs_oracle"]  # a mean of equal ratios may differ from them in the last bit
        row["time_ok"] = share is not None and share <= TIME_FRACTION + ROUNDING
        row["wall_ok"] = row["time_vs_oracle"] is not None and row["time_vs_oracle"] <= TIME_FRACTION + ROUNDING
    return row




def _targets(rows: list[dict[str, Any]]) -> list[Target]:
    methods = [r for r in rows if "retain_ok" in r]
    targets = []
    for key, label in CHECKS:
        meeting = [r["method"] for r in methods if r[key]]
        targets.append(Target(f"{label} (some method)", bool(meeting),
                              ", ".join(meeting) if meeting else "no method", ""))
    together = [r["method"] for r in methods if all(r[key] for key, _ in CHECKS)]
    why = ""
    if not together:
        why = "Missed because no method meets all three at once: " + "; ".join(_shortfall(r) for r in methods) + "."
    targets.append(Target("all three at once, time in iterations and in wall seconds (some method)", bool(together),
                          ", ".join(together) if together else "no method", why))
    if methods:
        closest = {
            "forget_ok": min(methods, key=lambda r: max(abs(r["kta_vs_oracle"]), abs(r["ua_vs_oracle"]))),
            "retain_ok": min(methods, key=lambda r: abs(r["bta_vs_original"])),
            "time_ok": min(methods, key=lambda r: _ratio(r, "iterations_vs_oracle")),
            "wall_ok": min(methods, key=lambda r: _ratio(r, "time_vs_oracle")),
        }
        for target, (key, _) in zip(targets, CHECKS):
            if not target.met:
                target.why = f"Missed: the closest method is {_shortfall(closest[key])}."
    return targets


def _ratio(row: dict[str, Any], key: str) -> float:
    """A time ratio of a row for sorting (a missing one last)."""
    return row[key] if row.get(key) is not None else math.inf


def _shortfall(row: dict[str, Any]) -> str:
    times = [f"{100 * row[key]:.1f}% of its {what}" for key, what in
             (("iterations_vs_oracle", "iterations"), ("time_vs_oracle", "wall time"),
              ("cpu_time_vs_oracle", "CPU time")) if row.get(key) is not None]
    parts = [f"retain {row['bta_vs_original']:+.2f} dB",
             f"forget KTA {row['kta_vs_oracle']:+.2f} / UA {row['ua_vs_oracle']:+.2f} dB from the oracle",
             ", ".join(times) if times else "time n/a"]
    return f"{row['method']} {', '.join(parts)}"
