"""Tiny networks, data and trainers for the handler tests (8^3 volumes, a few samples, fixed seeds)."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from torch import nn

from harmonize.keys import Keys

SIDE = 8


class TinyNet(nn.Module):
    """A conv encoder to a 4-d feature and a linear task head: the smallest extractor + head network."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten()
        )
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def make_batches(num_sites: int, batch: int = 8, batches: int = 2, seed: int = 0) -> list[dict]:
    """Batches whose intensity carries the site (so a head can learn it) and whose target is an 'age'."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        site = torch.arange(batch) % num_sites
        image = torch.randn(batch, 1, SIDE, SIDE, SIDE, generator=g) + site.view(-1, 1, 1, 1, 1).float() * 0.5
        age = torch.rand(batch, generator=g) * 50 + 20
        out.append({Keys.IMAGE: image, Keys.LABEL: age.view(-1, 1) / 50.0, Keys.SITE: site, Keys.AGE: age})
    return out


def make_trainer(net: nn.Module, data: list[dict], epochs: int = 1, lr: float = 1e-2) -> SupervisedTrainer:
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=lr),
        loss_function=nn.MSELoss(),
        epoch_length=len(data),
    )


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()
