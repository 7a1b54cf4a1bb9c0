"""``harmonize forget``: make a trained model forget withdrawn subjects, and audit whether it still remembers them."""

from __future__ import annotations

import argparse
import logging

from harmonize import defaults
from harmonize.cli import options

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

#: Method names, in the order ``--help`` lists them (those of harmonize.workflows.forget.FORGET_METHODS).
METHODS = ("ft", "ga", "ga_l1", "ga_l1_ft", "nl", "nl_ft")
#: A loss ceiling (> 0).
POSITIVE = options.number(float, 0, None, low_open=True)

DESCRIPTION = """\
Forget the subjects marked in the manifest's 'forget' column (true for each withdrawn subject's training rows)
from a trained brain-age or segmentation model, with a machine-unlearning method (Xue et al.): ft fine-tunes on
the retained subjects; ga / ga_l1 ascend the withdrawn subjects' loss; nl trains on them with noisy ages (brain
age only); ga_l1_ft and nl_ft are ga_l1 or nl followed by ft. A segmentation model (a tissue-segmentation bundle
folder) forgets with the Dice + cross-entropy loss. The BatchNorm statistics are then recomputed on the retained
subjects. Writes the unlearned model(s) (OUT/models/<method>.pt, or OUT/bundle_<method>/ for a bundle, readable
by harmonize audit), and a report (OUT/metrics.json, OUT/report.md, OUT/report.html, OUT/figures/): the task
error (age error, or Dice) on the retained, withdrawn and held-out scans, the site probe, the time against
retraining, and a membership-inference audit:
the AUC (with a bootstrap interval) of a loss-threshold attack telling the withdrawn subjects from held-out
subjects of the same sites (0.5: indistinguishable). --oracle also retrains the model from scratch without them,
the reference a forgetting method should match. The original model is only read.
"""


def _ceiling(text: str) -> float | None:
    """``--loss-ceiling``: a number > 0, or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(POSITIVE(text))
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err}, or 'none' for no ceiling") from None


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(","))
    unknown = [n for n in names if n not in METHODS]
    if unknown or not all(names):
        raise argparse.ArgumentTypeError(f"must be one or more of {', '.join(METHODS)} separated by commas, got "
                                         f"{text!r}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``forget`` subcommand."""
    parser = subparsers.add_parser(
        "forget", help="make a trained model forget withdrawn subjects; audit membership inference; write a report",
        description=DESCRIPTION,
    )
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="a brain-age model file (OUT/models/<method>.pt of harmonize compare) or a MONAI bundle "
                             "folder with models/model.pt (brain-age or tissue segmentation)")
    parser.add_argument("--manifest", required=True, metavar="CSV",
                        help="the manifest the model was trained on, with a 'forget' column marking the withdrawn "
                             "subjects' training rows")
    parser.add_argument("--method", type=_methods, default=(defaults.FORGET_METHOD,), metavar="LIST",
                        help=f"the unlearning method, or several separated by commas, each run from the original and "
                             f"compared in one report ({', '.join(METHODS)}; default {defaults.FORGET_METHOD})")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty or absent)")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out (an earlier run's outputs)")
    reference = parser.add_mutually_exclusive_group()
    reference.add_argument("--oracle", action="store_true",
                           help="also retrain from scratch without the withdrawn subjects (slow: a full training run)")
    reference.add_argument("--oracle-model", default=None, metavar="PATH",
                           help="a model already retrained without the withdrawn subjects (model file or bundle "
                                "folder), measured as the oracle instead of retraining one with --oracle")
    parser.add_argument("--ft-epochs", type=options.EPOCHS, default=defaults.FORGET_FT_EPOCHS, metavar="N",
                        help=f"epochs of the fine-tuning stage (default {defaults.FORGET_FT_EPOCHS})")
    parser.add_argument("--forget-epochs", type=options.EPOCHS, default=defaults.FORGET_FORGET_EPOCHS, metavar="N",
                        help=f"epochs of the ga / ga_l1 / nl stage (default {defaults.FORGET_FORGET_EPOCHS})")
    parser.add_argument("--lr", type=options.LEARNING_RATE, default=defaults.FORGET_LEARNING_RATE, metavar="X",
                        help=f"learning rate of the ft and nl stages (default {defaults.FORGET_LEARNING_RATE})")
    parser.add_argument("--ga-lr", type=options.LEARNING_RATE, default=defaults.FORGET_GA_LEARNING_RATE, metavar="X",
                        help=f"learning rate of the ga stages (default {defaults.FORGET_GA_LEARNING_RATE})")
    parser.add_argument("--loss-ceiling", type=_ceiling, default=defaults.FORGET_LOSS_CEILING, metavar="X",
                        help="per-subject ceiling of the withdrawn subjects' loss under ga / ga_l1 of a brain-age "
                             "model, in squared standard deviations of the training ages: a subject whose loss reached "
                             f"it no longer pushes the ascent; 'none' for no ceiling (default "
                             f"{defaults.FORGET_LOSS_CEILING})")
    parser.add_argument("--segmentation-loss-ceiling", type=_ceiling, default=None, metavar="X",
                        help="the same for a segmentation model, in units of its Dice + cross-entropy loss "
                             "(default none)")
    parser.add_argument("--oracle-epochs", type=options.EPOCHS, default=None, metavar="N",
                        help="epochs of a segmentation model's --oracle, trained from scratch (default "
                             f"{defaults.FORGET_SEGMENTATION_ORACLE_EPOCHS}, the segmentation bundle's max_epochs); a "
                             "brain-age oracle repeats the model's recorded training")
    parser.add_argument("--bootstrap", type=options.BOOTSTRAP, default=defaults.MIA_BOOTSTRAP, metavar="N",
                        help="bootstrap replicates of the membership AUC's interval "
                             f"(default {defaults.MIA_BOOTSTRAP})")
    parser.add_argument("--permutations", type=options.PERMUTATIONS, default=0, metavar="N",
                        help="label permutations of the site probe's p-value, 0 for none (default 0)")
    parser.add_argument("--seed", type=options.SEED, default=defaults.SEED, metavar="X",
                        help="seed of the batch order, the noise, the oracle and the bootstrap "
                             f"(default {defaults.SEED})")
    parser.add_argument("--device", default=None, metavar="DEV",
                        help="where to run: cpu or cuda (default: cpu, or the GPU a model file was saved on)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Forget, audit and log a short summary; return 0."""
    from harmonize.devices import resolve_device
    from harmonize.workflows.forget import ForgetSettings, forget_model

    if args.device is not None:
        resolve_device(args.device, "--device")
    settings = ForgetSettings(
        method=args.method[0], ft_epochs=args.ft_epochs, forget_epochs=args.forget_epochs, learning_rate=args.lr,
        ga_learning_rate=args.ga_lr, loss_ceiling=args.loss_ceiling,
        segmentation_loss_ceiling=args.segmentation_loss_ceiling, oracle_epochs=args.oracle_epochs,
        oracle=args.oracle, bootstrap=args.bootstrap,
        permutations=args.permutations, seed=args.seed, device=args.device,
    )
    metrics = forget_model(args.model, args.manifest, args.out, settings, overwrite=args.overwrite,
                           report=logger.info, methods=args.method, oracle_model=args.oracle_model)
    figures = metrics["models"]
    logger.info("membership AUC: %s: report in %s/report.html",
                ", ".join(f"{name} {values['mia_auc']:.3f}" for name, values in figures.items()), args.out)
    return 0
