"""``python -m benchmarks [name ...] [--quick] [--jobs N] [--threads N] [--device cpu|cuda] [--out F] [--update]``.

Runs the named benchmarks (default: all, in report order), prints each table, and rewrites the report with every
table run, the command, the machine (with the parallel jobs and threads) and the date (atomically,
:func:`harmonize.io.write_text_atomic`). The report's folder is claimed as an output of harmonize
(:func:`harmonize.output_dir.output_file`): locked while the run writes, and an existing ``--out`` is replaced only
when it is a report of an earlier run (recorded in the folder's ``.harmonize-outputs.json``, or recognised by its
first lines); a file of the user's there is refused, and the folder's other files are kept. Independent trainings run ``--jobs`` at a time
(:class:`~benchmarks.common.Workers`); timings always run alone. With ``--update``, only the sections of the
benchmarks run (and their rows of the targets table) are replaced in an existing report, each headed by the run that
measured it (:func:`~benchmarks.common.update_report`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import time
from pathlib import Path

from benchmarks import BENCHMARKS
from benchmarks.common import (
    BenchmarkResult,
    Workers,
    available_cores,
    is_report,
    load_averages,
    machine_description,
    section_note,
    update_report,
    write_report,
)

#: The repository root; the default report lies in its ``docs/``.
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks.md"
#: Said in the report while a run is still going (or was stopped).
INCOMPLETE_NOTE = "**Incomplete run**: {done} of {total} benchmarks finished when this file was written."
#: Said in a report of a ``--quick`` run.
QUICK_NOTE = ("**This is a `--quick` run**: tiny cohorts and networks, few repeats. It shows that every benchmark "
              "runs; its figures are not measurements of the project's claims (run without `--quick` for those).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure harmonize's claims side by side (overhead, efficacy, scaling with sites, "
                    "reconstruction unlearning, forgetting withdrawn subjects, preprocessing cache) and rewrite the "
                    "benchmarks report.",
    )
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"benchmarks to run, among {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and few repeats: the whole suite in under 3 minutes on 2 CPU cores "
                             "(figures are a smoke test, not measurements)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the networks run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"report to rewrite (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the generated cohorts and outputs here (default: temporary folders, removed)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads in all (default: torch's own choice); each parallel job gets "
                             "max(1, threads // jobs)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="independent trainings (efficacy runs, the scaling benchmark's probes, memory "
                             "processes) at once, each in its own process (default: the CPU cores, "
                             f"here {available_cores()}; capped by each benchmark's runs); timings never run in "
                             "parallel")
    parser.add_argument("--shared-machine", action="store_true",
                        help="say in the report that other work shared the machine during the run")
    parser.add_argument("--update", action="store_true",
                        help="replace only the named benchmarks' sections (and their rows of the targets table) in "
                             "the existing report, each headed by this run's command, machine and load; the other "
                             "sections are kept (without an existing report, a new one is written)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    if args.jobs is not None and args.jobs < 1:
        print(f"error: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    if args.update and args.quick:
        print("error: --update puts this run's sections into a report of measurements, but --quick figures are a "
              "smoke test; write a --quick run to its own --out, or run without --quick", file=sys.stderr)
        return 2
    from harmonize.errors import HarmonizeError
    from harmonize.output_dir import output_file

    try:
        claim = output_file(args.out, "python -m benchmarks", overwrite=True, known=is_report)
        claim.claim()
    except HarmonizeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        return _run_all(args, argv)
    finally:
        claim.release()


def _run_all(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the benchmarks, rewriting the report after each; 0 when all ran."""
    workers = Workers(jobs=args.jobs or available_cores(), threads=args.threads)
    names = args.names or list(BENCHMARKS)
    size = "quick" if args.quick else "full"
    machine = machine_description(args.device, workers)
    start = time.perf_counter()
    command = shlex.join(["python", "-m", "benchmarks", *argv])
    notes = [QUICK_NOTE] if args.quick else []
    results: list[BenchmarkResult] = []
    path = args.out
    update = args.update and is_report(args.out)
    for done, name in enumerate(names, start=1):
        module_name, settings_name, function_name = BENCHMARKS[name]
        module = importlib.import_module(module_name)
        settings = getattr(module, settings_name).for_size(size)
        results.append(getattr(module, function_name)(settings, device=args.device, work_dir=args.work_dir,
                                                      report=print, workers=workers))
        # rewritten after every benchmark, so a run stopped half-way leaves the tables it finished
        progress = [] if done == len(names) else [INCOMPLETE_NOTE.format(done=done, total=len(names))]
        if (loads := load_averages()) is not None:
            machine["load average at end (1/5/15 min)"] = " / ".join(f"{x:.2f}" for x in loads)
        if update:
            result = results[-1]
            note = section_note(name, command, result.seconds, machine, shared=args.shared_machine)
            path = update_report(args.out, [result], {name: note})
            continue
        ordered = sorted(results, key=lambda r: list(BENCHMARKS).index(r.name) if r.name in BENCHMARKS else len(names))
        path = write_report(args.out, ordered, command, machine, time.perf_counter() - start,
                            shared=args.shared_machine, notes=notes + progress)
    seconds = time.perf_counter() - start
    missed = sum(not t.met for r in results for t in r.targets)
    print(f"report written to {path} ({seconds / 60:.1f} min; {missed} target(s) missed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
