"""Shared pieces of the benchmarks: the machine, worker processes, a side-by-side timer, peak memory, and tables.

Machines are noisy (other jobs, frequency scaling, caches), so no figure of a benchmark is an absolute time
compared with a number measured another day: :func:`interleaved_times` runs the variants' iterations in turn
(A B C, B C A, C A B, ...), so a burst of load hits every variant alike, and a figure is the median of the
ratios of samples taken side by side. Runs whose figures are not times (training and auditing a model) are
independent of each other: :class:`~harmonize.workflows.workers.Workers` (re-exported here) runs them in parallel
processes, each with its own torch threads.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harmonize.audit.seed_summary import CI_SUFFIX
from harmonize.audit.verdict import with_interval
from harmonize.workflows.workers import WorkerPool, Workers, available_cores

__all__ = [
    "SIZES",
    "BenchmarkResult",
    "Column",
    "Target",
    "WorkerPool",
    "Workers",
    "available_cores",
    "finish",
    "format_value",
    "load_averages",
    "interleaved_times",
    "is_report",
    "machine_description",
    "markdown_table",
    "median",
    "paired_ratio",
    "peak_mb_in_child",
    "peak_rss_delta_mb",
    "probe_figures",
    "ratio_spread",
    "render_report",
    "section_note",
    "update_report",
    "write_report",
]

#: The sizes a benchmark runs at: ``smallest`` (tests, seconds), ``quick`` (the whole suite in < 3 min),
#: ``full`` (the whole suite in < 30 min on 2 CPU cores).
SIZES = ("smallest", "quick", "full")
#: How every report :func:`render_report` writes begins (recognises a report written before output records).
REPORT_START = "# Benchmarks\n\nWritten by `python -m benchmarks`"
#: Heading of the summary of every benchmark's targets in a report.
TARGETS_HEADING = "## Targets"
#: The lines that open that summary: its heading and its table's header.
TARGETS_HEAD = (TARGETS_HEADING, "", "| benchmark | target | measured | status |", "|---|---|---|---|")
#: Placeholder of a missing value in a table.
MISSING = "—"
#: Bytes in a mebibyte.
MIB = 1024 * 1024
#: ``/proc`` files of peak resident memory (Linux).
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
#: Writing this to ``clear_refs`` resets the peak resident set size (``VmHWM``) to the current one (Linux >= 4.0).
_RESET_PEAK_RSS = "5"


@dataclass(frozen=True)
class Column:
    """One column of a table: the row key, its header, and a ``format`` spec for numbers (e.g. ``".2f"``)."""

    key: str
    header: str
    fmt: str = ""


@dataclass
class Target:
    """A claim of the project and whether this run met it.

    Attributes:
        name: the claim, e.g. ``"fused <= 1.3x plain"``.
        met: whether the measured figure meets it.
        measured: the figure, as text (e.g. ``"1.04x"``).
        why: when missed, one sentence on why (from the measured figures).
    """

    name: str
    met: bool
    measured: str
    why: str = ""

    def markdown(self) -> str:
        status = "**met**" if self.met else "**missed**"
        line = f"- {self.name}: {status} (measured {self.measured})."
        return f"{line} {self.why}" if (self.why and not self.met) else line


@dataclass
class BenchmarkResult:
    """What one benchmark returns: its table rows, the targets it checks and notes for the report."""

    name: str
    title: str
    description: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        """The rows as a markdown table."""
        return markdown_table(self.columns, self.rows)

    def markdown(self) -> str:
        """The benchmark's section of ``docs/benchmarks.md``."""
        parts = [f"## {self.title}", "", self.description, "", self.table(), ""]
        if self.targets:
            parts += ["Targets:", "", *[t.markdown() for t in self.targets], ""]
        if self.notes:
            parts += [*[f"- {n}" for n in self.notes], ""]
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        parts += [f"<sub>Settings: {shown}. Wall time of this benchmark: {self.seconds:.0f} s.</sub>", ""]
        return "\n".join(parts)

    def text(self) -> str:
        """The table and targets for the terminal."""
        lines = [f"== {self.title} ({self.seconds:.0f} s)", self.table()]
        lines += [t.markdown() for t in self.targets]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- the machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back to what platform knows
    return platform.processor() or platform.machine()


def machine_description(device: str = "cpu", workers: Workers | None = None) -> dict[str, str]:
    """The machine a run measures: CPU model and cores, torch threads, parallel jobs, GPU, versions, load, date.

    Args:
        device: ``cpu`` or ``cuda``.
        workers: the parallel jobs of the run (default: one job, this process's threads).
    """
    import monai
    import torch

    workers = workers or Workers()
    info = {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": str(available_cores()),
        "torch threads": str(workers.total_threads()),
        "parallel jobs": str(workers.jobs),
        "torch threads per job": str(workers.threads_per_job()),
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "platform": platform.platform(terse=True),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if (loads := load_averages()) is not None:
        info["load average at start (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in loads)
    return info


def load_averages() -> tuple[float, float, float] | None:
    """The machine's load averages over 1, 5 and 15 minutes (``None`` where the platform has none)."""
    return os.getloadavg() if hasattr(os, "getloadavg") else None


# ------------------------------------------------------------------------------------------------------ timing
def interleaved_times(
    variants: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Time each variant ``repeats`` times, the variants' runs interleaved, after ``warmup`` discarded runs.

    Round ``r`` runs the variants in an order rotated by ``r`` (A B C, B C A, C A B, ...), so that load on the
    machine and the position within a round hit every variant alike.

    Args:
        variants: name -> a callable doing one timed unit of work (e.g. a few training iterations).
        repeats: timed runs of each variant.
        warmup: runs of each variant before timing starts (discarded: first-call allocations, caches).
        synchronize: called before reading the clock (``torch.cuda.synchronize`` on a GPU).

    Returns:
        name -> the ``repeats`` wall times in seconds, in round order.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    names = list(variants)
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            variants[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """The median (``nan`` for no values)."""
    return float(statistics.median(values)) if values else float("nan")


def _round_ratios(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> list[float]:
    return [a / b for a, b in zip(times[numerator], times[denominator]) if b > 0]


def paired_ratio(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``numerator``'s time over ``denominator``'s time in the same round."""
    return median(_round_ratios(times, numerator, denominator))


def ratio_spread(times: Mapping[str, Sequence[float]], numerator: str, denominator: str, fmt: str = ".2f") -> str:
    """The spread behind :func:`paired_ratio`: the first and third quartiles of the per-round ratios, as text.

    A narrow spread next to a target's margin says fewer repeats would measure the same ratio; a wide one says
    more are needed. ``"—"`` with fewer than two rounds.
    """
    ratios = _round_ratios(times, numerator, denominator)
    if len(ratios) < 2:
        return MISSING
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return f"{q1:{fmt}}–{q3:{fmt}}"


def probe_figures(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A benchmark row's figures of one audited brain-age model.

    Args:
        metrics: the model's :func:`~harmonize.workflows.brain_age.evaluate_brain_age` figures.

    Returns:
        ``site_probe_bacc``, ``chance``, ``points_above_chance`` (100 x (balanced accuracy - chance)),
        ``site_probe_floor`` and ``site_probe_conditional`` (``None`` without ages), ``age_mae`` and
        ``domain_head_acc`` (``None`` without a domain head).
    """
    return {
        "site_probe_bacc": metrics["site_probe_bacc"],
        "chance": metrics["chance"],
        "points_above_chance": 100 * (metrics["site_probe_bacc"] - metrics["chance"]),
        "site_probe_floor": metrics.get("site_probe_floor"),
        "site_probe_conditional": metrics.get("site_probe_conditional"),
        "age_mae": metrics["age_mae"],
        "domain_head_acc": metrics.get("domain_head_acc"),
    }


def finish(result: BenchmarkResult, start: float, report: Callable[[str], None]) -> BenchmarkResult:
    """The end of every benchmark: its wall time since ``start`` (``time.perf_counter()``), its table printed.

    Returns:
        ``result``, with ``seconds`` set.
    """
    result.seconds = time.perf_counter() - start
    report(result.text())
    return result


# ------------------------------------------------------------------------------------------------------ memory
def _vm_kib(field_name: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_mb_in_child(module: str, job: Mapping[str, Any], what: str, timeout_s: float) -> float:
    """Run ``module._memory_child()`` in a fresh Python process, ``job`` as JSON on its stdin; its peak in MiB.

    A fresh process measures one variant's peak alone (a process's high-water mark cannot go down). The child
    prints ``{"peak_mb": ...}`` as its last line.

    Raises:
        RuntimeError: the child failed (``what`` names the measurement; the end of its stderr is shown).
    """
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    code = f"from {module} import _memory_child; _memory_child()"
    try:
        done = subprocess.run([sys.executable, "-c", code], input=json.dumps(dict(job)), capture_output=True,
                              text=True, env=env, check=True, timeout=timeout_s)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"Measuring the memory of {what} failed:\n{err.stderr[-2000:]}") from err
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


def peak_rss_delta_mb(work: Callable[[], Any]) -> float:
    """Peak resident memory of this process while ``work`` runs, above what it held before, in MiB (Linux).

    The peak (``VmHWM``) is reset to the current resident size first (``/proc/self/clear_refs``); where that
    file cannot be written, the process's lifetime peak is used. Call it in a fresh process: memory that an
    earlier computation freed stays with the C allocator and hides later peaks.
    """
    before = _vm_kib("VmRSS")
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK_RSS)
    except OSError:
        pass  # older kernel or no permission: the lifetime peak is the best available
    work()
    peak = _vm_kib("VmHWM")
    if before is None or peak is None:
        import resource

        return float("nan") if before is None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return max(peak - before, 0) / 1024


# ---------------------------------------------------------------------------------------------------- markdown
def format_value(value: Any, fmt: str = "") -> str:
    """A table cell: numbers with ``fmt``, ``None`` and NaN as a dash, booleans as yes/no."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isnan(value):
        return MISSING
    if fmt and isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def with_intervals(row: Mapping[str, Any], figures: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """A copy of a row whose figures (``(key, title, fmt)``) read as their mean with the ``<key>_ci`` interval
    (:func:`~harmonize.audit.verdict.with_interval`, as the reports write them)."""
    shown = dict(row)
    for key, _, fmt in figures:
        shown[key] = with_interval(row.get(key), row.get(f"{key}{CI_SUFFIX}"), fmt, missing=MISSING)
    return shown


def markdown_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table: numeric columns (those with a ``fmt``) right-aligned."""
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("--:" if c.fmt else "---" for c in columns) + "|"
    body = ["| " + " | ".join(format_value(r.get(c.key), c.fmt) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _target_rows(result: BenchmarkResult) -> list[str]:
    """The result's rows of the report's targets table."""
    return [f"| {result.name} | {t.name} | {t.measured} | {'met' if t.met else 'missed'} |" for t in result.targets]


def render_report(
    results: Sequence[BenchmarkResult],
    command: str,
    machine: Mapping[str, str],
    seconds: float,
    shared: bool = False,
    notes: Sequence[str] = (),
) -> str:
    """The whole ``docs/benchmarks.md``: how it was made, a summary of the targets, then each benchmark."""
    title, _, written_by = REPORT_START.partition("\n\n")
    lines = [
        title,
        "",
        (f"{written_by} (the `benchmarks/` folder of the repository); every run rewrites this "
         "file. Every figure is a ratio or a quality metric measured side by side in one run: timed variants run "
         "interleaved (A B C, B C A, ...) after discarded warm-up runs, and a ratio is the median of the ratios "
         "within each round. Independent trainings (the efficacy runs, the scaling benchmark's probes) and the "
         "memory processes run in `parallel jobs` processes with `torch threads per job` each; timed variants never "
         "run beside anything of this run."),
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min wall).",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
    ]
    if shared:
        lines += [
            ("**The machine was shared with other work during this run** (other jobs used its cores), so timings "
             "carry more noise than on an idle machine; the ratios are measured side by side, which cancels most "
             "of it, and the absolute seconds are not comparable with other runs."),
            "",
        ]
    for note in notes:
        lines += [note, ""]
    targets = [(r, t) for r in results for t in r.targets]
    if targets:
        lines += list(TARGETS_HEAD)
        lines += [row for r in results for row in _target_rows(r)]
        lines.append("")
    for r in results:
        lines.append(r.markdown())
    return "\n".join(lines).rstrip() + "\n"


def is_report(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a report :func:`render_report` wrote (by its first lines)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(len(REPORT_START)) == REPORT_START
    except OSError:
        return False


def write_report(
    path: str | os.PathLike[str],
    results: Sequence[BenchmarkResult],
    command: str | None = None,
    machine: Mapping[str, str] | None = None,
    seconds: float = 0.0,
    shared: bool = False,
    notes: Sequence[str] = (),
) -> Path:
    """Write :func:`render_report` to ``path`` atomically (:func:`harmonize.io.write_text_atomic`)."""
    from harmonize.io import write_text_atomic

    command = command or " ".join(["python -m benchmarks", *sys.argv[1:]])
    text = render_report(results, command, machine or machine_description(), seconds, shared, notes)
    return write_text_atomic(path, text)


def section_note(name: str, command: str, seconds: float, machine: Mapping[str, str], shared: bool = False) -> str:
    """The line that heads a section :func:`update_report` replaced: the run that measured it, apart from the rest.

    Args:
        name: the benchmark.
        command: the command of the run.
        seconds: the benchmark's wall time.
        machine: :func:`machine_description` of the run (its date, CPU, cores and load averages are named).
        shared: whether other work shared the machine during the run.
    """
    where = ", ".join(machine[k] for k in ("date", "cpu") if k in machine)
    if "cores" in machine:
        where += f", {machine['cores']} cores"
    loads = [f"{when} {machine[f'load average at {when} (1/5/15 min)']}" for when in ("start", "end")
             if f"load average at {when} (1/5/15 min)" in machine]
    if loads:
        where += "; load average at " + " and at ".join(loads)
    if shared:
        where += "; other work shared the machine"
    return (f"_This section was re-measured on its own: `{command}` ({seconds / 60:.1f} min wall, {where}). The "
            f"other sections come from the run named at the top; the {name} rows of the targets table come from this "
            "run._")


def update_report(path: str | os.PathLike[str], results: Sequence[BenchmarkResult],
                  notes: Mapping[str, str]) -> Path:
    """Replace the results' sections, and their rows of the targets table, in the report at ``path``; keep the rest.

    A section is found by its heading (the benchmark's title); one not there is added at the end. Each replaced
    section begins with its note (:func:`section_note`). The file is written atomically.

    Args:
        path: an existing report (:func:`is_report`).
        results: the benchmarks run.
        notes: benchmark name -> the line that heads its section.

    Raises:
        ValueError: ``path`` is not a report of ``python -m benchmarks``.
    """
    from harmonize.io import write_text_atomic

    if not is_report(path):
        raise ValueError(f"{path} is not a report of python -m benchmarks (it does not begin with "
                         f"{REPORT_START.splitlines()[0]!r}); write a new one without --update.")
    text = Path(path).read_text(encoding="utf-8")
    parts = [part for part in re.split(r"(?m)^(?=## )", text) if part]  # untouched parts are kept byte for byte
    for result in results:
        head, _, rest = result.markdown().partition("\n\n")
        section = f"{head}\n\n{notes[result.name]}\n\n{rest}".rstrip("\n") + "\n\n"
        same = [i for i, part in enumerate(parts) if part.splitlines()[0] == head]
        if same:
            parts[same[0]] = section
        else:
            parts[-1] = parts[-1].rstrip("\n") + "\n\n"
            parts.append(section)
        targets = [i for i, part in enumerate(parts) if part.splitlines()[0] == TARGETS_HEADING]
        if targets:
            body = parts[targets[0]].rstrip("\n")
            lines = [line for line in body.splitlines() if not line.startswith(f"| {result.name} |")]
            last = max(i for i, line in enumerate(lines) if line.startswith("|"))
            lines[last + 1:last + 1] = _target_rows(result)
            parts[targets[0]] = "\n".join(lines) + parts[targets[0]][len(body):]
        elif result.targets:
            parts.insert(1, "\n".join([*TARGETS_HEAD, *_target_rows(result)]) + "\n\n")
    return write_text_atomic(path, "".join(parts).rstrip("\n") + "\n")
