"""Reconstruction unlearning (Xue et al., "Erase to Enhance"): how close does each method come to the oracle?

Runs :func:`harmonize.workflows.recon_unlearning.run_recon_unlearning` (settings
:meth:`~harmonize.workflows.recon_unlearning.ReconUnlearningSettings.tiny` / ``.demo()`` / ``.benchmark()``, the
methods restricted to FT, GA-L1-FT, NL and NL-FT and no retain-fraction sweep) and checks each method against
the targets of issue #8: forget PSNR (forget-test KTA and forget-train UA) within 0.5 dB of the oracle's, retain
PSNR (BTA) within 0.3 dB of the original's, in at most 10 % of the oracle's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkResult, Column, Target, Workers, finish
from harmonize.keys import ReconMethod

__all__ = ["METHODS", "ReconSettings", "run_recon"]

#: Unlearning methods compared (after the original and the oracle).
METHODS: tuple[str, ...] = (ReconMethod.FT, ReconMethod.GA_L1_FT, ReconMethod.NL, ReconMethod.NL_FT)
#: Targets: forget PSNR within this of the oracle's (dB), retain PSNR within this of the original's (dB), time at
#: most this fraction of the oracle's.
FORGET_MARGIN_DB = 0.5
RETAIN_MARGIN_DB = 0.3
TIME_FRACTION = 0.10
#: Named settings of the experiment.
PROFILES = ("tiny", "demo", "benchmark")


@dataclass
class ReconSettings:
    """Which settings of the experiment to run.

    Args:
        profile: ``tiny`` (seconds, numbers not meaningful), ``demo`` (the demo's, minutes) or ``benchmark``
            (hours on a CPU).
        methods: unlearning methods to run.
        seed: seed of the experiment.
    """

    profile: str = "demo"
    methods: tuple[str, ...] = METHODS
    seed: int = 0

    @classmethod
    def for_size(cls, size: str) -> ReconSettings:
        """``smallest`` and ``quick``: the tiny settings; ``full``: the demo's."""
        return cls(profile="demo" if size == "full" else "tiny")

    def experiment(self, device: str = "cpu") -> Any:
        """The :class:`~harmonize.workflows.recon_unlearning.ReconUnlearningSettings` to run."""
        from harmonize.workflows.recon_unlearning import ReconUnlearningSettings

        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)}, got {self.profile!r}.")
        base = getattr(ReconUnlearningSettings, self.profile)()
        return replace(base, methods=tuple(self.methods), fractions=(), fraction_methods=(), seed=self.seed,
                       device=device)


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
        Rows ``method``, ``bta_psnr``, ``kta_psnr``, ``ua_psnr``, ``seconds``, ``bta_vs_original``,
        ``kta_vs_oracle``, ``ua_vs_oracle`` (dB differences), ``time_vs_oracle``, ``retain_ok``, ``forget_ok``,
        ``time_ok`` (``None`` for the original and the oracle).
    """
    from harmonize.workflows.recon_unlearning import run_recon_unlearning

    settings = settings or ReconSettings()
    start = time.perf_counter()
    experiment = settings.experiment(device)
    out = Path(work_dir) / "recon" if work_dir is not None else None
    table = run_recon_unlearning(experiment, out).table
    by = {r["method"]: r for r in table}
    original, oracle = by[ReconMethod.ORIGINAL], by[ReconMethod.ORACLE]
    rows = []
    for r in table:
        row = {k: r[k] for k in ("method", "bta_psnr", "kta_psnr", "ua_psnr", "seconds")}
        row["method"] = str(row["method"])
        row.update(
            bta_vs_original=r["bta_psnr"] - original["bta_psnr"],
            kta_vs_oracle=r["kta_psnr"] - oracle["kta_psnr"],
            ua_vs_oracle=r["ua_psnr"] - oracle["ua_psnr"],
            time_vs_oracle=r["seconds"] / oracle["seconds"] if oracle["seconds"] > 0 else None,
        )
        if r["method"] not in (ReconMethod.ORIGINAL, ReconMethod.ORACLE):
            row["retain_ok"] = abs(row["bta_vs_original"]) <= RETAIN_MARGIN_DB
            row["forget_ok"] = (abs(row["kta_vs_oracle"]) <= FORGET_MARGIN_DB
                                and abs(row["ua_vs_oracle"]) <= FORGET_MARGIN_DB)
            row["time_ok"] = row["time_vs_oracle"] is not None and row["time_vs_oracle"] <= TIME_FRACTION
        rows.append(row)
    result = BenchmarkResult(
        name="recon",
        title="Reconstruction unlearning against the original and the oracle",
        description=(
            f"`run_recon_unlearning` with `ReconUnlearningSettings.{settings.profile}()` ({experiment.data.size}² slices, "
            f"{experiment.data.retain_train_volumes} retain / {experiment.data.forget_train_volumes} forget training volumes x "
            f"{experiment.data.slices_per_volume} slices, {experiment.network}, original and oracle "
            f"{experiment.original_epochs} / {experiment.oracle_epochs} epochs, FT variants on "
            f"{100 * experiment.unlearning.retain_fraction:g}% of the retain set). PSNR in dB per volume: BTA = retain-test, "
            "KTA = forget-test, UA = forget-train. Differences: BTA against the original's, KTA and UA against the "
            "oracle's; time against the oracle's (retraining from scratch)."
        ),
        columns=[
            Column("method", "method"),
            Column("bta_psnr", "BTA", ".2f"),
            Column("kta_psnr", "KTA", ".2f"),
            Column("ua_psnr", "UA", ".2f"),
            Column("seconds", "seconds", ".1f"),
            Column("bta_vs_original", "BTA - original", "+.2f"),
            Column("kta_vs_oracle", "KTA - oracle", "+.2f"),
            Column("ua_vs_oracle", "UA - oracle", "+.2f"),
            Column("time_vs_oracle", "time / oracle", ".3f"),
            Column("retain_ok", f"retain within {RETAIN_MARGIN_DB} dB"),
            Column("forget_ok", f"forget within {FORGET_MARGIN_DB} dB"),
            Column("time_ok", f"time <= {TIME_FRACTION:.0%}"),
        ],
        rows=rows,
        targets=_targets(rows),
        settings=asdict(settings),
    )
    return finish(result, start, report)


def _targets(rows: list[dict[str, Any]]) -> list[Target]:
    methods = [r for r in rows if "retain_ok" in r]
    targets = []
    for label, key in ((f"forget PSNR (KTA and UA) within {FORGET_MARGIN_DB} dB of the oracle's", "forget_ok"),
                       (f"retain PSNR (BTA) within {RETAIN_MARGIN_DB} dB of the original's", "retain_ok"),
                       (f"time <= {TIME_FRACTION:.0%} of the oracle's", "time_ok")):
        meeting = [r["method"] for r in methods if r[key]]
        targets.append(Target(f"{label} (some method)", bool(meeting),
                              ", ".join(meeting) if meeting else "no method", ""))
    together = [r["method"] for r in methods if r["retain_ok"] and r["forget_ok"] and r["time_ok"]]
    why = ""
    if not together:
        why = "Missed because no method meets all three at once: " + "; ".join(_shortfall(r) for r in methods) + "."
    targets.append(Target("all three at once (some method)", bool(together),
                          ", ".join(together) if together else "no method", why))
    if methods:
        closest = {
            "forget_ok": min(methods, key=lambda r: max(abs(r["kta_vs_oracle"]), abs(r["ua_vs_oracle"]))),
            "retain_ok": min(methods, key=lambda r: abs(r["bta_vs_original"])),
            "time_ok": min(methods, key=lambda r: r["time_vs_oracle"] if r["time_vs_oracle"] is not None else 1e9),
        }
        for t, key in zip(targets[:3], ("forget_ok", "retain_ok", "time_ok")):
            if not t.met:
                t.why = f"Missed: the closest method is {_shortfall(closest[key])}."
    return targets


def _shortfall(row: dict[str, Any]) -> str:
    parts = [f"retain {row['bta_vs_original']:+.2f} dB",
             f"forget KTA {row['kta_vs_oracle']:+.2f} / UA {row['ua_vs_oracle']:+.2f} dB from the oracle",
             f"{100 * row['time_vs_oracle']:.0f}% of its time" if row["time_vs_oracle"] is not None else "time n/a"]
    return f"{row['method']} {', '.join(parts)}"
