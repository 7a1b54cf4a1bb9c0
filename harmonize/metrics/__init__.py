"""Metrics computed outside the training loop (plain PyTorch + MONAI metrics; no engines, no files).

- :mod:`~harmonize.metrics.reconstruction`: per-volume PSNR / SSIM and the BTA / KTA / UA table of
  reconstruction unlearning (Xue et al.).
- :class:`~harmonize.metrics.dice_per_scan.DicePerScan`: the Dice of every scan a segmenter labels.
"""

from harmonize.metrics.dice_per_scan import DicePerScan
from harmonize.metrics.reconstruction import (
    TABLE_COLUMNS,
    evaluate_reconstruction,
    mean_metrics,
    unlearning_row,
    unlearning_table,
    volume_metrics,
)

__all__ = [
    "TABLE_COLUMNS",
    "DicePerScan",
    "evaluate_reconstruction",
    "mean_metrics",
    "unlearning_row",
    "unlearning_table",
    "volume_metrics",
]
