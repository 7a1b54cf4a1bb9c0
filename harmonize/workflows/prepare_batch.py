"""Turn a manifest batch into the ``(inputs, targets)`` pair that MONAI's ``SupervisedTrainer`` trains on."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

from harmonize.errors import ConfigError, HarmonizeError, integer_problem
from harmonize.keys import Keys

__all__ = ["PrepareTargetBatch"]


class PrepareTargetBatch:
    """``prepare_batch`` for ``SupervisedTrainer``: the image, and a task target with unlabelled samples blanked.

    Samples without a task label keep going through the network (the unlearning handler still uses them), but
    their target is set to ``missing_value``, which :class:`~harmonize.losses.MaskedLoss` skips: this is the
    semi-supervised variant of Dinsdale et al. (2021) inside an ordinary trainer.

    Args:
        target_key: batch key of the target (``age`` for brain age, ``label`` for segmentation).
        labelled_key: optional batch key of a per-sample bool saying the sample has a label (``has_label``).
        labelled_ids: optional subject ids whose targets may be used; the others are blanked.
        missing_value: value written into blanked targets (``NaN`` for regression, ``-1`` for label maps).
        num_classes: the classes of a label-map target (the network's output channels): a label value outside
            ``0..num_classes - 1`` (other than ``missing_value``) is refused with an error naming the scans, instead
            of an index error deep inside the loss's one-hot encoding.
    """

    def __init__(
        self,
        target_key: str = Keys.AGE,
        labelled_key: str | None = None,
        labelled_ids: Collection[str] | None = None,
        missing_value: float = float("nan"),
        num_classes: int | None = None,
    ) -> None:
        if num_classes is not None and (problem := integer_problem("num_classes", num_classes)):
            raise ConfigError("PrepareTargetBatch: invalid argument.", problems=[problem])
        self.target_key = str(target_key)
        self.labelled_key = labelled_key
        self.labelled_ids = None if labelled_ids is None else frozenset(map(str, labelled_ids))
        self.missing_value = missing_value
        self.num_classes = None if num_classes is None else int(num_classes)

    def __call__(
        self, batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **_: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.as_tensor(batchdata[Keys.IMAGE])
        target = torch.as_tensor(batchdata[self.target_key])
        if target.ndim == 1:
            target = target.float().unsqueeze(1)
        keep = torch.ones(target.shape[0], dtype=torch.bool)
        if self.labelled_key is not None:
            keep &= torch.as_tensor(batchdata[self.labelled_key]).reshape(-1).bool().cpu()
        if self.labelled_ids is not None:
            keep &= torch.tensor([str(s) in self.labelled_ids for s in batchdata[Keys.SUBJECT_ID]])
        if self.num_classes is not None:
            self._check_classes(batchdata, target, keep)
        if not bool(keep.all()):
            blank = (~keep).view(-1, *([1] * (target.ndim - 1))).to(target.device)
            target = target.masked_fill(blank, self.missing_value)
        return (
            image.to(device=device, non_blocking=non_blocking),
            target.to(device=device, non_blocking=non_blocking),
        )

    def _check_classes(self, batchdata: Mapping[str, Any], target: torch.Tensor, keep: torch.Tensor) -> None:
        """Raise naming the scans whose label map holds values outside the classes (or non-integral ones)."""
        flat = target.reshape(target.shape[0], -1)
        outside = (flat < 0) | (flat >= self.num_classes) | (flat != torch.round(flat))
        outside &= flat != self.missing_value
        bad = outside.any(dim=1).cpu() & keep
        if not bool(bad.any()):
            return
        ids = list(batchdata.get(Keys.SUBJECT_ID, range(target.shape[0])))
        files = getattr(batchdata.get(self.target_key), "meta", {}).get("filename_or_obj")
        problems = []
        for i in torch.nonzero(bad).reshape(-1).tolist():
            values = torch.unique(flat[i][outside[i]])[:5].tolist()
            where = f" ({files[i]})" if isinstance(files, (list, tuple)) and i < len(files) else ""
            problems.append(f"subject {ids[i]!s}{where}: values {values}")
        raise HarmonizeError(
            f"Label maps of {len(problems)} scan(s) hold values outside the {self.num_classes} classes "
            f"0..{self.num_classes - 1} of the network ('{self.target_key}'): fix the label maps (e.g. merge or "
            "relabel the extra structures), or train a network with more output channels.",
            problems=problems,
        )
