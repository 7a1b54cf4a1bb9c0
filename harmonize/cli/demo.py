"""``harmonize demo``: the main job on the embedded multi-scanner cohort."""

from __future__ import annotations

import argparse
import sys

from harmonize import defaults
from harmonize.cli import options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the embedded multi-scanner cohort",
        description=(
            "Generate the embedded multi-scanner cohort, validate and preprocess it, make a reconstruction "
            "network forget a second anatomy (FT, GA, GA-L1-FT, NL, NL-FT against an oracle), then run harmonize "
            "compare on it: train a brain-age network without unlearning, with scanner unlearning and with DANN "
            "(the last scanner held out of training), harmonise the plain network's features with ComBat, and "
            "audit each: is the scanner still readable from the features, is age still predicted, and how well on "
            "the unseen scanner? Writes OUT/metrics.json, OUT/comparison.md, OUT/models/ and a self-contained "
            "OUT/report.html. Progress goes to stderr (--quick: a one-minute smoke version)."
        ),
    )
    parser.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    parser.add_argument("--quick", action="store_true", help="a tiny version for a smoke test (about a minute)")
    parser.add_argument("--seed", type=options.SEED, default=None,
                        help="seed of the cohort and the training (default 0)")
    parser.add_argument("--seeds", type=options.SEEDS_COUNT, default=None, metavar="N",
                        help=f"train every brain-age method on N seeds (default {defaults.DEMO_SEEDS}; DANN on the first only)")
    parser.add_argument("--jobs", type=options.JOBS, default=None, metavar="J",
                        help="brain-age training runs at once, in parallel processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from harmonize.workflows.demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    chosen = {"seed": args.seed, "seeds": args.seeds, "jobs": args.jobs}
    settings = replace(settings, **{k: v for k, v in chosen.items() if v is not None})
    run_demo(args.out, settings, overwrite=args.overwrite, report=lambda line: print(line, file=sys.stderr, flush=True))
    return 0
