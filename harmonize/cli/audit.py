"""``harmonize audit``: can the scanner still be read from a trained model's features, and is its task kept?"""

from __future__ import annotations

import argparse
import logging

from harmonize import defaults
from harmonize.cli import options

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Audit a trained brain-age or tissue-segmentation model on a manifest's scans that it did not train on: the val
and test scans of its training sites, and every scan of a site it never saw. A logistic-regression site probe is
cross-validated on the model's features (balanced accuracy against chance, with a permutation p-value); ridge
regression and a second probe read age and sex from the same features (where the manifest has them). The task is
measured per site and on unseen sites: the age error of a brain-age network, the Dice per tissue (CSF, GM, WM,
against the manifest's label maps) of a segmentation network (harmonize.networks.TissueSegmenter). Writes
OUT/metrics.json, OUT/figures/*.png (PCA and t-SNE of the features by site and age, age error or Dice per site,
domain-head training curves) and a self-contained OUT/report.html. The model is a MONAI bundle folder (--bundle:
configs/inference.json or train.json with 'network_def', 'taps' and 'transforms', weights in models/model.pt,
e.g. bundles/tissue_seg_unlearning after training) or a brain-age model file written by harmonize compare
(--checkpoint OUT/models/<method>.pt).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand."""
    parser = subparsers.add_parser(
        "audit", help="probe a trained model's features for scanner, age and sex, measure its task; write a report",
        description=DESCRIPTION,
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--bundle", metavar="DIR",
                       help="a MONAI bundle folder (configs/ and models/model.pt) of a brain-age or "
                            "tissue-segmentation network")
    model.add_argument("--checkpoint", metavar="FILE",
                       help="a brain-age model file written by harmonize compare / save_model (e.g. "
                            "OUT/models/none.pt)")
    parser.add_argument("--manifest", required=True, metavar="CSV",
                        help="the (preprocessed) manifest of the scans to audit (with a label column for a "
                             "segmentation model); its val/test rows of the model's sites and all rows of other "
                             "sites are audited")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty or absent)")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out")
    parser.add_argument("--permutations", type=options.PERMUTATIONS, default=defaults.PROBE_PERMUTATIONS, metavar="N",
                        help="label permutations of the site probe's p-value, 0 for none "
                             f"(default {defaults.PROBE_PERMUTATIONS})")
    parser.add_argument("--seed", type=options.SEED, default=defaults.SEED, metavar="X",
                        help=f"seed of the probes and the t-SNE embedding (default {defaults.SEED})")
    parser.add_argument("--device", default=None, metavar="DEV",
                        help="where to run the model: cpu or cuda (default: cpu, or the GPU a model file was saved on)")
    parser.add_argument("--no-input-check", action="store_true",
                        help="audit scans even when their shape, spacing or intensity standardisation differs from "
                             "the model's training scans (recorded in a model file); by default that is an error")
    parser.add_argument("--loader-workers", type=options.LOADER_WORKERS, default=None, metavar="N",
                        help="data-loader processes that read the scans ahead of the network (default: the model's "
                             "training setting, else 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Audit the model and log a short summary; return 0."""
    from harmonize.devices import resolve_device
    from harmonize.keys import Task
    from harmonize.workflows.audit import audit_model

    if args.device is not None:
        resolve_device(args.device, "--device")

    metrics = audit_model(args.bundle or args.checkpoint, args.manifest, args.out, overwrite=args.overwrite,
                          permutations=args.permutations, seed=args.seed, device=args.device, report=logger.info,
                          check_inputs=not args.no_input_check, num_workers=args.loader_workers)
    if metrics.get("task") == Task.SEGMENTATION:
        dice = "n/a" if metrics["mean_dice"] is None else f"{metrics['mean_dice']:.3f}"
        logger.info("site probe %.3f (chance %.3f), mean Dice %s: report in %s/report.html",
                    metrics["site_probe_bacc"], metrics["chance"], dice, args.out)
    else:
        logger.info("site probe %.3f (chance %.3f), age MAE %.2f y: report in %s/report.html",
                    metrics["site_probe_bacc"], metrics["chance"], metrics["age_mae"], args.out)
    return 0
