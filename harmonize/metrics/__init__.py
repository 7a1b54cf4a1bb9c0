"""Metrics computed outside the training loop (plain PyTorch + MONAI metrics; no engines, no files).

- :mod:`~harmonize.metrics.reconstruction`: per-volume PSNR / SSIM and the BTA / KTA / UA table of
  reconstruction unlearning (Xue et al.).
"""

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
    "evaluate_reconstruction",
    "mean_metrics",
    "unlearning_row",
    "unlearning_table",
    "volume_metrics",
]
