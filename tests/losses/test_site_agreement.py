"""SiteAgreementLoss: a per-site constant earns nothing, a site's offset at a shared age costs, state and bad input."""

from __future__ import annotations

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.losses import SiteAgreementLoss

SITES = torch.tensor([0, 0, 1, 1])
AGES = torch.tensor([22.0, 27.0, 41.0, 46.0])  # no age bin in common: the agreement term has nothing to compare


def _loss(agreement: float = 2.0) -> SiteAgreementLoss:
    return SiteAgreementLoss(num_sites=2, scale=5.0, max_age=80.0, agreement=agreement)


def _call(loss: SiteAgreementLoss, pred: torch.Tensor, ages: torch.Tensor = AGES, sites: torch.Tensor = SITES,
          target: torch.Tensor | None = None) -> torch.Tensor:
    loss.set_batch(sites, ages)
    return loss(pred.reshape(-1, 1), (ages if target is None else target).reshape(-1, 1))


def test_a_constant_per_site_earns_nothing():
    """Shifting one site's predictions by a constant (what reading the scanner adds) leaves loss and gradient alone."""
    pred = (AGES + torch.tensor([3.0, -1.0, 2.0, -4.0])).requires_grad_()
    shifted = (pred.detach() + torch.tensor([0.0, 0.0, 7.0, 7.0])).requires_grad_()
    plain, moved = _call(_loss(), pred), _call(_loss(), shifted)
    assert moved.item() == pytest.approx(plain.item())
    (grad,), (grad_moved,) = torch.autograd.grad(plain, pred), torch.autograd.grad(moved, shifted)
    assert torch.allclose(grad, grad_moved)
    assert grad[2:].sum().item() == pytest.approx(0.0, abs=1e-7)  # nothing pushes site 1's level


def test_the_value_by_hand():
    loss = _loss(agreement=2.0)
    residual = torch.tensor([3.0, -1.0, 2.0, -4.0])
    # first batch: each site's offset is its own batch mean (1 and -1 years); no bin is shared yet
    first = _call(loss, AGES + residual)
    expected = ((2.0**2 + 2.0**2 + 3.0**2 + 3.0**2) / 25.0) / (4 * 3.0)
    assert first.item() == pytest.approx(expected)
    assert loss.site_means.tolist() == pytest.approx([0.2, -0.2])  # years / scale
    # second batch: a site-1 scan at 23 years, in site 0's bin of 20-25 (running mean residual 3 y)
    second = _call(loss, torch.tensor([24.0]), ages=torch.tensor([23.0]), sites=torch.tensor([1]))
    fixed = (1.0 / 5.0 - (-0.2)) ** 2  # its residual (1 y) against site 1's running offset (-1 y)
    agree = (1.0 / 5.0 - 3.0 / 5.0) ** 2  # ... and against site 0's running mean residual at that age (3 y)
    assert second.item() == pytest.approx((fixed + 2.0 * agree) / 3.0)


def test_an_offset_at_a_shared_age_costs():
    def after_a_common_batch(offset: float) -> float:
        loss = _loss()
        ages, sites = torch.tensor([30.0, 31.0, 30.5, 31.5]), SITES
        _call(loss, ages, ages=ages, sites=sites)
        return _call(loss, ages + torch.tensor([0.0, 0.0, offset, offset]), ages=ages, sites=sites).item()

    assert after_a_common_batch(4.0) > after_a_common_batch(0.0) + 0.05


def test_unlabelled_scans_count_for_nothing():
    pred = (AGES + 2.0).requires_grad_()
    target = AGES.clone()
    target[1] = float("nan")
    value = _call(_loss(), pred, target=target)
    (grad,) = torch.autograd.grad(value, pred)
    assert torch.isfinite(value) and torch.isfinite(grad).all() and grad[1] == 0
    none = _call(_loss(), pred, target=torch.full((4,), float("nan")))
    assert none.item() == 0.0 and torch.autograd.grad(none, pred)[0].eq(0).all()


def test_scans_of_unknown_site_count_for_nothing_and_unknown_indices_are_refused():
    pred = (AGES + torch.tensor([3.0, -1.0, 2.0, -4.0])).requires_grad_()
    unknown = _call(_loss(), pred, sites=torch.tensor([0, 0, 1, -1]))
    (grad,) = torch.autograd.grad(unknown, pred)
    assert grad[3] == 0
    assert unknown.item() == pytest.approx(_call(_loss(), pred[:3], ages=AGES[:3], sites=SITES[:3]).item())
    with pytest.raises(ValueError, match=r"site index 2 in a batch of a loss made for 2 sites \(indices 0..1\)"):
        _call(_loss(), pred, sites=torch.tensor([0, 1, 2, 0]))


def test_the_running_means_are_its_state():
    first, again = _loss(), _loss()
    _call(first, AGES + torch.tensor([3.0, -1.0, 2.0, -4.0]))
    again.load_state_dict(first.state_dict())
    probe = AGES + torch.tensor([1.0, 0.0, -1.0, 2.0])
    assert _call(again, probe).item() == _call(first, probe).item()
    assert set(first.state_dict()) == {"site_means", "site_seen", "bin_means", "bin_seen"}


def test_the_scale_is_the_pooled_within_site_sd_of_the_training_ages():
    loss = SiteAgreementLoss.for_training_ages([20.0, 24.0, 60.0, 64.0, float("nan")], ["a", "a", "b", "b", "b"], 2)
    assert loss.scale == pytest.approx(2.0) and loss.bin_means.shape == (2, 13)  # bins of 5 y up to 64
    one_age_each = SiteAgreementLoss.for_training_ages([20.0, 60.0], [0, 1], 2)
    assert one_age_each.scale == pytest.approx(20.0)
    with pytest.raises(ConfigError, match="invalid arguments"):
        SiteAgreementLoss.for_training_ages([float("nan")], [0], 1)


def test_a_batch_without_sites_is_refused():
    with pytest.raises(ValueError, match=r"no sites for this batch of 4; call attach\(trainer\)"):
        _loss()(AGES.reshape(-1, 1), AGES.reshape(-1, 1))


def test_every_bad_argument_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        SiteAgreementLoss(num_sites=0, scale=0.0, max_age=-1.0, agreement=-1.0, age_bin=0.0, momentum=1.5)
    assert err.value.message == "SiteAgreementLoss: invalid arguments."
    assert len(err.value.problems) == 6
