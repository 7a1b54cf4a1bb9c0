"""EvidenceGate: a confound the training features do not carry is switched off at the first unlearning epoch."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from harmonize.audit.feature_probes import evidence_beyond
from harmonize.errors import ConfigError
from harmonize.handlers import Confound, DomainUnlearningHandler, EvidenceGate, RefitHeads
from harmonize.keys import Keys, StateKeys
from harmonize.networks import DomainHead

from .conftest import TinyNet, make_batches, make_trainer

EPOCHS, WARMUP = 4, 1


class FixedMeasure:
    """A measure that returns a fixed evidence (or raises) and remembers what it was given."""

    def __init__(self, evidence: float | None) -> None:
        self.evidence, self.calls = evidence, []

    def __call__(self, features, labels, covariates):
        self.calls.append((features.shape, sorted(covariates)))
        if self.evidence is None:
            raise ConfigError("classifier_probe: classes [1] have a single sample; cross-validation needs at least 2.")
        return self.evidence


def _train(measure: FixedMeasure | None, data: list[dict]):
    torch.manual_seed(0)
    net = TinyNet()
    trainer = make_trainer(net, data, epochs=EPOCHS)
    handler = None
    if measure is not None:
        confound = Confound(DomainHead(4, 2, hidden=()), num_classes=2)
        handler = DomainUnlearningHandler(net, "encoder", confound, adversary=RefitHeads(refit_steps=5),
                                          warmup=WARMUP, gate=EvidenceGate(measure, margin=0.05))
        handler.attach(trainer)
    trainer.run()
    return net, handler


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_confound_the_features_do_not_carry_is_not_unlearned(caplog):
    data = make_batches(2)
    plain, _ = _train(None, data)
    measure = FixedMeasure(0.01)
    with caplog.at_level(logging.INFO, logger="harmonize.handlers.evidence_gate"):
        gated, handler = _train(measure, data)
    assert handler.confounds[0].weight_scale == 0.0
    assert _equal(plain, gated)  # nothing but the task trained the network: exactly plain training
    assert measure.calls == [((16, 4), [str(Keys.AGE)])]  # once, at the first unlearning epoch, on every scan
    history = handler.history
    assert history[WARMUP][f"{StateKeys.EVIDENCE}_site"] == pytest.approx(0.01)
    assert not any(f"{StateKeys.REFIT_ACC}_site" in epoch for epoch in history)  # no adversary was fitted
    assert "the training features tell site 0.010 beyond age (margin 0.050): it is not unlearned" in caplog.text
    assert handler.state_dict()["weight_scales"] == {"site": 0.0}  # the decision is saved with the handler


def test_a_confound_the_features_carry_is_unlearned_and_an_unmeasurable_one_too(caplog):
    data = make_batches(2)
    plain, _ = _train(None, data)
    for evidence in (0.3, None):
        with caplog.at_level(logging.WARNING, logger="harmonize.handlers.evidence_gate"):
            unlearned, handler = _train(FixedMeasure(evidence), data)
        assert handler.confounds[0].weight_scale == 1.0
        assert not _equal(plain, unlearned)
        assert all(f"{StateKeys.REFIT_ACC}_site" in epoch for epoch in handler.history[WARMUP:])
    assert "could not measure" in caplog.text


def test_the_margin_is_checked():
    with pytest.raises(ConfigError, match="evidence_margin"):
        EvidenceGate(FixedMeasure(0.0), margin=1.5)


def test_evidence_beyond_reads_what_the_features_add_to_the_covariates():
    rng = np.random.default_rng(0)
    n = 120
    site = np.arange(n) % 3
    age = rng.uniform(20, 80, n) + 10 * site  # the sites differ in age, as in a biased design
    sex = rng.integers(0, 2, n)
    noise = rng.normal(size=(n, 6))
    carries = np.column_stack([noise, np.eye(3)[site] * 2 + rng.normal(scale=0.5, size=(n, 3))])
    of_age = np.column_stack([noise, age / 10 + rng.normal(scale=0.1, size=n)])  # only age, which tells some site
    covariates = {Keys.AGE: age, Keys.SEX: sex}
    assert evidence_beyond(carries, site, covariates) > 0.3
    assert abs(evidence_beyond(of_age, site, covariates)) < 0.1
    assert abs(evidence_beyond(noise, site, {})) < 0.1  # no covariates: against chance
    with pytest.raises(ConfigError, match="single sample"):
        evidence_beyond(noise[:4], np.array([0, 0, 0, 1]), {})
