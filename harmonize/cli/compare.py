"""``harmonize compare``: no unlearning, unlearning, DANN and ComBat on the same data, in one table and report."""

from __future__ import annotations

import argparse
import logging

from harmonize import defaults
from harmonize.cli import options

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Train the same brain-age network on a manifest without unlearning (none), with scanner unlearning and with DANN,
harmonise the plain network's features with ComBat (neuroHarmonize, age and sex protected), and audit each on the
held-out scans: site probe (balanced accuracy, chance, permutation p-value), age error, age and sex read from
the features. One whole site is kept out of training (--unseen-site, default the last) and each method's age
error on it is reported; ComBat cannot harmonise a site it was not fitted on, and the report says what it did.
With --seeds N every method trains on the seeds SEED, SEED+1, ..., SEED+N-1 (--jobs J of them at once, in parallel
processes); the table gives each figure's mean over seeds and its 95 % interval, and the report opens with what
the paired comparison with 'none' supports.
Writes OUT/metrics.json, OUT/comparison.md and .json (one table), OUT/figures/, OUT/report.html and each trained
network in OUT/models/<method>.pt (the first seed's; audit it again with harmonize audit --checkpoint), with
several seeds also OUT/models/<method>_seed<seed>.pt.
"""


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    parser = subparsers.add_parser(
        "compare", help="compare none / unlearning / DANN / ComBat on one manifest: one table, one report",
        description=DESCRIPTION,
    )
    parser.add_argument("--manifest", required=True, metavar="CSV", help="the (preprocessed) manifest")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty or absent)")
    parser.add_argument("--methods", type=_methods, default=None, metavar="LIST",
                        help="comma-separated methods to compare (default none,unlearning,dann,combat; also erasure; "
                             "combat and erasure need none, unlearning_erasure needs unlearning)")
    parser.add_argument("--epochs", type=options.EPOCHS, default=defaults.DEMO_EPOCHS, metavar="N",
                        help=f"training epochs of each network (default {defaults.DEMO_EPOCHS})")
    parser.add_argument("--channels", type=options.CHANNELS, default=defaults.AGE_CHANNELS, metavar="C1,C2,...",
                        help="channels of the encoder's blocks; every image axis must be at least 2^(blocks - 1) "
                             f"voxels (default {','.join(map(str, defaults.AGE_CHANNELS))}, the paper's)")
    parser.add_argument("--unseen-site", default=None, metavar="NAME",
                        help="the site kept out of training and scored as a new scanner: a site name, 'last' (the "
                             "last in sorted order, default) or 'none'")
    parser.add_argument("--combat-unseen", default=None, metavar="CHOICE",
                        help="ComBat and the unseen site: 'passthrough' leaves its scans unharmonised (default), "
                             "'error' records ComBat's refusal")
    parser.add_argument("--permutations", type=options.PERMUTATIONS, default=defaults.PROBE_PERMUTATIONS, metavar="N",
                        help=f"label permutations of each site probe's p-value (default {defaults.PROBE_PERMUTATIONS})")
    parser.add_argument("--seed", type=options.SEED, default=defaults.SEED, metavar="X",
                        help=f"seed of the networks, the loaders and the probes (default {defaults.SEED})")
    parser.add_argument("--seeds", type=options.SEEDS_COUNT, default=1, metavar="N",
                        help="train every method on N seeds (--seed, --seed + 1, ...) and report means, 95%% intervals "
                             "and paired p-values over them (default 1; 3 or more to tell methods apart)")
    parser.add_argument("--jobs", type=options.JOBS, default=1, metavar="J",
                        help="training runs at once, each in its own process with its share of the torch threads "
                             "(default 1: one after another)")
    parser.add_argument("--device", default="cpu", metavar="DEV", help="cpu or cuda (default cpu)")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision training on a CUDA device (MONAI's amp; the domain heads stay float32)")
    parser.add_argument("--adversary", choices=("refit", "paper"), default="refit",
                        help="the unlearning run's domain head: 'refit' (default) re-fits a linear head on all "
                             "training scans every epoch (docs/unlearning.md); "
                             "'paper' is the per-batch MLP head of Dinsdale et al. with beta 10")
    options.add_dataset_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the comparison and log where the table and report are; return 0."""
    from harmonize.devices import resolve_device
    from harmonize.workflows.brain_age import BrainAgeSettings
    from harmonize.workflows.compare import CompareSettings, compare_methods
    from harmonize.workflows.unlearning import UnlearningSettings

    resolve_device(args.device, "--device")
    unlearning = UnlearningSettings.refit_adversary() if args.adversary == "refit" else UnlearningSettings()
    training = BrainAgeSettings(unlearning=unlearning, max_epochs=args.epochs, channels=args.channels, seed=args.seed,
                                device=args.device, amp=args.amp, **options.dataset_settings(args))
    chosen = {"methods": args.methods, "unseen_site": args.unseen_site, "combat_unseen": args.combat_unseen}
    settings = CompareSettings(training=training, permutations=args.permutations, seeds=args.seeds, jobs=args.jobs,
                               **{k: v for k, v in chosen.items() if v is not None})
    compare_methods(args.manifest, args.out, settings, report=logger.info, overwrite=args.overwrite,
                    progress=not args.quiet)
    logger.info("table in %s/comparison.md, report in %s/report.html", args.out, args.out)
    return 0
