"""refit_output_layer: the ridge fit of the regressor's last layer on the training scans' final features."""

from __future__ import annotations

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.networks import BrainAgeRegressor, refit_output_layer


@pytest.fixture
def network() -> BrainAgeRegressor:
    torch.manual_seed(0)
    return BrainAgeRegressor(spatial_dims=2, channels=(4, 8), feature_dim=12, hidden=6, age_offset=50.0,
                             age_scale=10.0).eval()


def _batches(network: BrainAgeRegressor, n: int = 40, missing: int = 0) -> tuple[list[dict], torch.Tensor]:
    """Batches whose ages are an exact linear function of the network's hidden activations."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(n, 1, 8, 8, generator=generator)
    with torch.no_grad():
        hidden = network.regressor.act(network.regressor.fc(network.encoder(images)))
    weights = torch.linspace(-2, 2, hidden.shape[1])
    ages = 50.0 + 10.0 * (hidden @ weights + 0.5)
    labelled = ages.clone()
    labelled[:missing] = float("nan")
    return [{"image": images[i:i + 8], "age": labelled[i:i + 8]} for i in range(0, n, 8)], ages


def _prepare(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return batch["image"], batch["age"]


def test_the_output_layer_learns_what_the_features_tell(network):
    batches, ages = _batches(network)
    before = {name: p.clone() for name, p in network.named_parameters()}
    network.train()
    alpha = refit_output_layer(network, batches, _prepare)
    assert network.training  # its mode is restored
    assert alpha == pytest.approx(1e-3)  # an exact linear target needs the smallest penalty searched
    network.eval()
    with torch.no_grad():
        predicted = torch.cat([network(b["image"]) for b in batches]).reshape(-1)
    assert torch.allclose(predicted, ages, atol=0.05)
    changed = [name for name, p in network.named_parameters() if not torch.equal(p, before[name])]
    assert changed == ["regressor.out.weight", "regressor.out.bias"]


def test_unlabelled_scans_are_left_out(network):
    batches, ages = _batches(network, missing=30)
    refit_output_layer(network, batches, _prepare)
    with torch.no_grad():
        predicted = torch.cat([network(b["image"]) for b in batches]).reshape(-1)
    assert torch.allclose(predicted[30:], ages[30:], atol=0.5)


def test_too_few_ages_are_refused(network):
    batches, _ = _batches(network, n=8, missing=7)
    with pytest.raises(ConfigError, match="at least 2 training scans with an age, got 1"):
        refit_output_layer(network, batches, _prepare)
