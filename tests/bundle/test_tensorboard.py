"""EpochScalarWriter: metrics and numeric state attributes, skipping unset and non-numeric ones."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from harmonize.bundle import EpochScalarWriter, tensorboard_available


class FakeWriter:
    def __init__(self):
        self.scalars, self.flushed = [], False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed = True


def test_writes_numbers_only():
    state = SimpleNamespace(epoch=3, metrics={"val_mae": 4.5, "bad": math.nan}, task_loss=torch.tensor(0.25),
                            unlearning_phase="warmup", confusion_loss_site=None, domain_acc_site=0.5)
    writer = FakeWriter()
    EpochScalarWriter(["task_loss", "unlearning_phase", "confusion_loss_site", "domain_acc_site", "absent"])(
        SimpleNamespace(state=state), writer)
    assert writer.scalars == [("val_mae", 4.5, 3), ("task_loss", 0.25, 3), ("domain_acc_site", 0.5, 3)]
    assert writer.flushed


def test_tensorboard_available_matches_the_import():
    import importlib.util

    assert tensorboard_available() is (importlib.util.find_spec("tensorboard") is not None)
