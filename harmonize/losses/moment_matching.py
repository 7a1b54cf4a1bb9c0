"""Moment matching of per-domain feature statistics: a non-adversarial unlearning penalty.

The confusion loss of Dinsdale et al. (NeuroImage 2021) removes what *its* domain head reads; the extractor can
fool that head while a freshly fitted probe still reads the scanner. A linear probe (the audit's logistic
regression) can only read the scanner from a feature if the scanners' feature *means* differ, so this penalty
asks for the means (and optionally the variances) of every feature to be equal across domains. It is the
linear-kernel special case of a maximum mean discrepancy (Gretton et al., JMLR 2012) and of the first- and
second-moment alignment of deep CORAL (Sun & Saenko, ECCV workshops 2016), applied between every domain and
the average of the domains.

A batch of 8-16 scans holds only a few scans per site, too few to estimate a site mean, so the statistics are
exponential moving averages over batches (buffers of the module) into which the current batch enters *with* its
gradient: each estimate is ``momentum * running + (1 - momentum) * batch``.

Caveat, measured on the embedded cohort (docs/unlearning.md, "Does it work?"): with 28 scans per site the
extractor equalises the *training* scans' site means (including their chance differences) and the held-out scans'
differences grow; the probe did not fall. Prefer the re-fitted adversary there; this penalty suits cohorts with
many scans per site.
"""

from __future__ import annotations

import torch
from torch import nn

from harmonize.errors import ConfigError
from harmonize.losses._sample_mask import as_plain_tensor

__all__ = ["MomentMatchingLoss"]

#: Smallest standard deviation of a feature, relative to the largest, in the whitened penalty.
SD_FLOOR = 1e-3
#: Fewest classes a domain can have.
MIN_CLASSES = 2


class MomentMatchingLoss(nn.Module):
    """Between-domain spread of the features' means (and variances), relative to their overall variance.

    For each feature ``d`` with overall variance ``s_d^2`` and per-domain means ``m_kd`` and variances ``v_kd``
    (``k`` over the domains seen so far),

    .. math::

        L = \\frac{1}{D} \\sum_d \\frac{1}{K} \\sum_k \\frac{(m_{kd} - \\bar m_d)^2}{s_d^2}
          + \\frac{\\lambda_v}{D} \\sum_d \\frac{1}{K} \\sum_k \\frac{(v_{kd} - \\bar v_d)^2}{s_d^4},

    where bars are unweighted averages over the domains (a balanced probe weighs every site equally). The first
    term is the fraction of each feature's variance explained by the domain (``eta^2`` for balanced domains);
    it is ``0`` exactly when no linear read-out can separate the domains by their means, and it does not change
    when the features are rescaled, so the extractor cannot lower it by shrinking the features. It lies in
    ``[0, 1)``: ``s_d^2`` is the variance of an equal mixture of the domains, within-domain plus between-domain.
    The variance term is scale-free too, and bounded (a log-variance term was dominated by features that are
    almost always zero after a ReLU in one site, which no probe cares about).

    The statistics are moving averages (buffers, saved with the module's ``state_dict``); the current batch
    enters each estimate with weight ``1 - momentum`` and carries the gradient. The buffers are updated only
    in training mode.

    Args:
        num_classes: number of domains (sites), at least 2.
        num_features: size of the feature vectors; ``None`` sizes the statistics from the first batch (or from
            a loaded ``state_dict``).
        momentum: weight of the running statistics in each estimate, in ``[0, 1)``; ``0`` uses the batch alone.
        variance_weight: weight ``lambda_v`` of the variance term (``0``: match the means only).
        whiten: measure the mean differences in the metric of the features' (ridge-regularised) correlation
            matrix instead of feature by feature: the mean term becomes
            ``(1/K) sum_k z_k^T (C + ridge I)^{-1} z_k`` with ``z_k`` the standardised mean difference of domain
            ``k`` and ``C`` the running correlation matrix (detached): the squared Mahalanobis distances that a
            linear discriminant reads, so small differences along directions of little variance count fully
            (a ridge-regularised Pillai trace, at most ``K - 1``, not divided by ``D``).
        ridge: the ridge added to ``C`` when whitening (in units of a feature's variance).

    Raises:
        ConfigError: (a ``ValueError``) an argument outside its range (the argument is named).
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int | None = None,
        momentum: float = 0.9,
        variance_weight: float = 1.0,
        whiten: bool = False,
        ridge: float = 0.1,
    ) -> None:
        super().__init__()
        problems = []
        if int(num_classes) != num_classes or num_classes < MIN_CLASSES:
            problems.append(f"num_classes must be an integer >= {MIN_CLASSES}, got {num_classes!r}")
        if num_features is not None and (int(num_features) != num_features or num_features < 1):
            problems.append(f"num_features must be a positive integer, got {num_features!r}")
        if not 0.0 <= momentum < 1.0:
            problems.append(f"momentum must lie in [0, 1), got {momentum!r}")
        if not (variance_weight >= 0 and variance_weight < float("inf")):
            problems.append(f"variance_weight must be a finite number >= 0, got {variance_weight!r}")
        if not (ridge > 0 and ridge < float("inf")):
            problems.append(f"ridge must be a positive number, got {ridge!r}")
        if problems:
            raise ConfigError(f"{type(self).__name__}: invalid arguments.", problems=problems)
        self.num_classes = int(num_classes)
        self.num_features = None if num_features is None else int(num_features)
        self.momentum = float(momentum)
        self.variance_weight = float(variance_weight)
        self.whiten = bool(whiten)
        self.ridge = float(ridge)
        width = self.num_features or 0
        self.register_buffer("class_mean", torch.zeros(self.num_classes, width))
        self.register_buffer("class_square", torch.zeros(self.num_classes, width))
        self.register_buffer("cross", torch.zeros(width if self.whiten else 0, width if self.whiten else 0))
        self.register_buffer("seen", torch.zeros(self.num_classes, dtype=torch.bool))

    def reset(self) -> None:
        """Forget the running statistics."""
        self.class_mean.zero_()
        self.class_square.zero_()
        self.cross.zero_()
        self.seen.zero_()

    def forward(self, features: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The penalty of a batch, with the running statistics of earlier batches.

        Args:
            features: ``(batch, num_features)``.
            labels: ``(batch,)`` domain indices in ``[0, num_classes)``; ``-1`` (unknown) is left out.
            mask: optional ``(batch,)`` bool tensor; ``False`` leaves a sample out.

        Returns:
            A scalar; ``0`` (with a gradient path) until two domains have been seen.

        Raises:
            ValueError: ``features`` is not ``(batch, num_features)``, or ``labels``/``mask`` do not match the
                batch, or a label is ``>= num_classes`` (the shapes or labels are named).
        """
        features = as_plain_tensor(features)
        if features.ndim == 2 and self.num_features is None:
            self._resize(features.shape[1], features.device)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}: features must have shape (batch, {self.num_features}), got "
                f"{tuple(features.shape)}."
            )
        batch = features.shape[0]
        labels = as_plain_tensor(labels).reshape(-1).to(features.device).long()
        if labels.shape[0] != batch:
            raise ValueError(f"{type(self).__name__}: labels have shape {tuple(labels.shape)}, features {tuple(features.shape)}.")
        if bool((labels >= self.num_classes).any()):
            raise ValueError(
                f"{type(self).__name__}: labels {labels[labels >= self.num_classes].unique().tolist()} are outside "
                f"0..{self.num_classes - 1}."
            )
        valid = labels >= 0
        if mask is not None:
            mask = as_plain_tensor(mask).reshape(-1).to(features.device).bool()
            if mask.shape[0] != batch:
                raise ValueError(f"{type(self).__name__}: mask has shape {tuple(mask.shape)}, features {tuple(features.shape)}.")
            valid = valid & mask
        x = features.to(torch.promote_types(features.dtype, torch.float32))
        onehot = torch.zeros(batch, self.num_classes, dtype=x.dtype, device=x.device)
        onehot[valid, labels[valid]] = 1.0
        counts = onehot.sum(0)
        present = counts > 0
        safe = counts.clamp_min(1.0).unsqueeze(1)
        batch_mean = onehot.t() @ x / safe
        batch_square = onehot.t() @ (x * x) / safe
        running_mean = self.class_mean.to(x.dtype)
        running_square = self.class_square.to(x.dtype)
        seen = self.seen.to(x.device)
        blend = torch.where(seen, self.momentum, 0.0).to(x.dtype).unsqueeze(1)
        mixed_mean = blend * running_mean + (1 - blend) * batch_mean
        mixed_square = blend * running_square + (1 - blend) * batch_square
        keep = present.unsqueeze(1)
        mean = torch.where(keep, mixed_mean, running_mean)
        square = torch.where(keep, mixed_square, running_square)
        known = seen | present
        cross = None
        if self.whiten and bool(valid.any()):
            xv = x[valid].detach()
            batch_cross = xv.t() @ xv / xv.shape[0]
            cross = batch_cross if not bool(seen.any()) else self.momentum * self.cross.to(x.dtype) + (1 - self.momentum) * batch_cross
        elif self.whiten:
            cross = self.cross.to(x.dtype)
        if self.training:
            with torch.no_grad():
                self.class_mean.copy_(mean.detach().to(self.class_mean.dtype))
                self.class_square.copy_(square.detach().to(self.class_square.dtype))
                self.seen.copy_(known)
                if cross is not None:
                    self.cross.copy_(cross.to(self.cross.dtype))
        if int(known.sum()) < MIN_CLASSES:
            return x.sum() * 0.0
        mean, square = mean[known], square[known]
        variance = (square - mean * mean).clamp_min(0.0)
        centre = mean.mean(0, keepdim=True)
        # Overall variance of an equal mixture of the domains: within (average variance) + between.
        total = variance.mean(0) + ((mean - centre) ** 2).mean(0)
        scale = total.clamp_min(torch.finfo(x.dtype).tiny)
        if self.whiten:
            loss = self._whitened(mean - centre, cross, centre.detach())
        else:
            loss = (((mean - centre) ** 2).mean(0) / scale).mean()
        if self.variance_weight > 0:
            spread = (variance - variance.mean(0, keepdim=True)) / scale
            loss = loss + self.variance_weight * (spread**2).mean()
        return loss

    def _whitened(self, diffs: torch.Tensor, cross: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """``(1/K) sum_k z_k^T (C + ridge I)^{-1} z_k`` with ``C`` the (detached) correlation matrix."""
        with torch.no_grad():
            cov = (cross - centre.t() @ centre).double()
            sd = cov.diagonal().clamp_min(0.0).sqrt()
            # A feature that never varies (a ReLU channel that is always off) has no mean difference either; a floor
            # relative to the largest spread keeps it from dividing by zero.
            sd = sd.clamp_min(SD_FLOOR * float(sd.max()) + torch.finfo(torch.float32).tiny)
            corr = cov / (sd.unsqueeze(0) * sd.unsqueeze(1))
            eye = torch.eye(corr.shape[0], dtype=corr.dtype, device=corr.device)
            precision = torch.linalg.inv(0.5 * (corr + corr.t()) + self.ridge * eye).to(diffs.dtype)
        z = diffs / sd.to(diffs.dtype)
        return ((z @ precision) * z).sum(1).mean()

    def _resize(self, num_features: int, device: torch.device) -> None:
        self.num_features = int(num_features)
        self.class_mean = torch.zeros(self.num_classes, self.num_features, device=device)
        self.class_square = torch.zeros(self.num_classes, self.num_features, device=device)
        self.seen = torch.zeros(self.num_classes, dtype=torch.bool, device=device)
        side = self.num_features if self.whiten else 0
        self.cross = torch.zeros(side, side, device=device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        stored = state_dict.get(prefix + "class_mean")
        if stored is not None and self.num_features is None:
            self._resize(stored.shape[1], self.class_mean.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, num_features={self.num_features}, momentum={self.momentum}, "
            f"variance_weight={self.variance_weight}, whiten={self.whiten}, ridge={self.ridge}"
        )
