"""An age loss that pays nothing for reading the scanner: site fixed effects, and agreement between sites at the
same age."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from harmonize import defaults
from harmonize.distributed import sum_over_processes
from harmonize.errors import integer_problem, number_problem, raise_problems
from harmonize.keys import Keys

__all__ = ["SiteAgreementLoss"]


class SiteAgreementLoss(nn.Module):
    """Squared error of a regression (brain age) in which a per-site constant earns nothing and costs where sites
    share ages.

    Where each site's subjects lie in their own age window (a biased design), a prediction read from anatomy is
    shrunk towards the cohort's mean age, too old on a young site and too young on an old one; a plain squared
    error then pays the network for adding a constant per site, i.e. for reading the scanner. With ``r`` a scan's
    residual in units of ``scale``, this loss is the mean over the labelled scans of

    ``(r - b_site)^2 + agreement * (r - m_other(age))^2``,

    where ``b_site`` is a running mean of the site's residuals (site fixed effects: a constant per site changes
    ``r`` and ``b_site`` alike) and ``m_other(age)`` the mean, over the *other* sites, of their running mean
    residual in the scan's age bin (present only where another site has scans of that age: a site's constant
    offset costs there, while the shrinkage towards the mean age, the same for every site at a given age,
    cancels). The sum is divided by ``1 + agreement``, so predicting each site's mean age costs about 1, as
    :class:`~harmonize.losses.StandardisedMSELoss` with the age SD does. Measurements: docs/unlearning.md.

    The running means are buffers (saved with ``state_dict``, so a resumed run goes on with them) and move by
    ``momentum`` towards each batch's means; under ``torch.distributed`` the batch means are those of all
    processes' batches. The loss reads each batch's sites and ages from the engine: call :meth:`attach` on the
    trainer, or :meth:`set_batch` before each call.

    Args:
        num_sites: training sites (site indices ``0..num_sites - 1``; a scan of site ``-1``, unknown, counts for
            nothing).
        scale: the unit of the residuals, > 0 (e.g. the pooled within-site SD of the training ages).
        max_age: the largest age (years) the bins cover; older scans share the last bin.
        agreement: weight of the agreement term, >= 0 (0: site fixed effects alone).
        age_bin: width of the age bins (years), > 0.
        momentum: how far each batch moves the running means, in (0, 1].

    Raises:
        ConfigError: on construction, every argument out of range at once.
    """

    def __init__(self, num_sites: int, scale: float, max_age: float, agreement: float = defaults.SITE_AGREEMENT,
                 age_bin: float = defaults.SITE_AGREEMENT_AGE_BIN, momentum: float = defaults.SITE_AGREEMENT_MOMENTUM,
                 ) -> None:
        super().__init__()
        raise_problems(type(self).__name__, [
            integer_problem("num_sites", num_sites, minimum=1), number_problem("scale", scale),
            number_problem("max_age", max_age, strict=False, minimum=0),
            number_problem("agreement", agreement, strict=False, minimum=0), number_problem("age_bin", age_bin),
            number_problem("momentum", momentum, maximum=1)])
        self.scale, self.agreement = float(scale), float(agreement)
        self.age_bin, self.momentum = float(age_bin), float(momentum)
        bins = int(math.floor(float(max_age) / self.age_bin)) + 1
        self.register_buffer("site_means", torch.zeros(int(num_sites), dtype=torch.float64))
        self.register_buffer("site_seen", torch.zeros(int(num_sites), dtype=torch.bool))
        self.register_buffer("bin_means", torch.zeros(int(num_sites), bins, dtype=torch.float64))
        self.register_buffer("bin_seen", torch.zeros(int(num_sites), bins, dtype=torch.bool))
        self.sites: torch.Tensor | None = None
        self.ages: torch.Tensor | None = None

    @classmethod
    def for_training_ages(cls, ages: Any, sites: Any, num_sites: int, agreement: float = defaults.SITE_AGREEMENT,
                          ) -> SiteAgreementLoss:
        """The loss for a cohort's training ages: ``scale`` their pooled within-site SD (their SD where every site
        holds one age, 1 where all are equal), ``max_age`` their oldest; unknown (non-finite) ages are left out.

        Args:
            ages: ``(n,)`` training ages (years).
            sites: ``(n,)`` their sites (names or indices).
            num_sites: the sites of the loss's site indices.
            agreement: weight of the agreement term.

        Raises:
            ConfigError: no finite age, or an argument out of range.
        """
        ages = np.asarray(ages, dtype=float).reshape(-1)
        known = np.isfinite(ages)
        if not known.any():
            raise_problems(cls.__name__, [f"'ages' must hold at least one finite age, got {ages.size} unknown"])
        ages = ages[known]
        _, group = np.unique(np.asarray(sites).reshape(-1)[known], return_inverse=True)
        means = np.bincount(group, weights=ages) / np.bincount(group)
        within = float(np.sqrt(np.mean((ages - means[group]) ** 2)))
        scale = within or float(ages.std()) or 1.0
        return cls(num_sites, scale, float(ages.max()), agreement=agreement)

    def set_batch(self, sites: Any, ages: Any) -> None:
        """The site index and the age of each scan of the next call's batch."""
        self.sites = torch.as_tensor(sites).reshape(-1).long()
        self.ages = torch.as_tensor(ages).reshape(-1).double()

    def attach(self, engine: Any) -> None:
        """Read each batch's sites and ages (``site``, ``age``) when an iteration starts."""
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_STARTED,
                                 lambda e: self.set_batch(e.state.batch[Keys.SITE], e.state.batch[Keys.AGE]))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.sites is None or self.ages is None or len(self.sites) != pred.shape[0]:
            raise ValueError(f"{type(self).__name__}: no sites for this batch of {pred.shape[0]}; call attach(trainer) "
                             "or set_batch(sites, ages) first.")
        if bool((self.sites >= len(self.site_means)).any()):
            raise ValueError(f"{type(self).__name__}: site index {int(self.sites.max())} in a batch of a loss made for "
                             f"{len(self.site_means)} sites (indices 0..{len(self.site_means) - 1}).")
        residual = (pred - target).reshape(pred.shape[0], -1)[:, 0] / self.scale
        sites = self.sites.to(residual.device)
        labelled = torch.isfinite(residual) & (sites >= 0)  # a scan of unknown site (-1) counts for nothing
        residual = torch.where(labelled, residual, torch.zeros_like(residual))  # no NaN into the gradient
        sites = sites.clamp(min=0)
        bins = torch.clamp(torch.floor(torch.nan_to_num(self.ages.to(residual.device)) / self.age_bin).long(), 0,
                           self.bin_means.shape[1] - 1)
        known = residual.detach().double()
        site_sum, site_count, bin_sum, bin_count = self._batch_sums(known, labelled, sites, bins)
        batch_site_means = site_sum / site_count.clamp(min=1)
        offsets = torch.where(self.site_seen, self.site_means, batch_site_means)[sites].to(residual.dtype)
        fixed = (residual - offsets) ** 2
        seen = self.bin_seen.double()
        others = (self.bin_means * seen).sum(0)[bins] - (self.bin_means * seen)[sites, bins]
        n_others = seen.sum(0)[bins] - seen[sites, bins]
        compared = labelled & (n_others > 0)
        reference = (others / n_others.clamp(min=1)).to(residual.dtype)
        agree = torch.where(compared, (residual - reference) ** 2, torch.zeros_like(residual))
        self._update(batch_site_means, site_count, bin_sum, bin_count)
        n = int(labelled.sum())
        if n == 0:
            return (pred * 0).sum()
        total = torch.where(labelled, fixed, torch.zeros_like(fixed)).sum() + self.agreement * agree.sum()
        return total / (n * (1.0 + self.agreement))

    def _batch_sums(self, known: torch.Tensor, labelled: torch.Tensor, sites: torch.Tensor, bins: torch.Tensor,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual sums and counts of the labelled scans per site and per (site, age bin), over every process."""
        count = labelled.double()
        bin_sum = torch.zeros_like(self.bin_means).index_put_((sites, bins), known, accumulate=True)
        bin_count = torch.zeros_like(self.bin_means).index_put_((sites, bins), count, accumulate=True)
        bin_sum, bin_count = sum_over_processes(bin_sum), sum_over_processes(bin_count)
        return bin_sum.sum(1), bin_count.sum(1), bin_sum, bin_count

    @torch.no_grad()
    def _update(self, batch_site_means: torch.Tensor, site_count: torch.Tensor, bin_sum: torch.Tensor,
                bin_count: torch.Tensor) -> None:
        """Move the running means per site and per (site, age bin) towards this batch's."""
        self._move(self.site_means, self.site_seen, batch_site_means, site_count > 0)
        self._move(self.bin_means, self.bin_seen, bin_sum / bin_count.clamp(min=1), bin_count > 0)

    def _move(self, means: torch.Tensor, seen: torch.Tensor, batch_means: torch.Tensor, present: torch.Tensor) -> None:
        """One running mean's step, in place, where the batch has scans (seen for the first time: the batch's)."""
        moved = torch.where(seen, (1 - self.momentum) * means + self.momentum * batch_means, batch_means)
        means.copy_(torch.where(present, moved, means))
        seen |= present
