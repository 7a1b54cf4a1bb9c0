"""StopOnNonFiniteLoss: a NaN/Inf loss stops training before the optimizer step, with a message that helps."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events

from harmonize.errors import HarmonizeError
from harmonize.handlers import StopOnNonFiniteLoss

from .conftest import make_batches, make_trainer


def _params(net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_finite_losses_train_normally(tiny_net):
    data = make_batches(num_sites=2, batches=2)
    trainer = make_trainer(tiny_net, data, epochs=2)
    StopOnNonFiniteLoss().attach(trainer)
    before = _params(tiny_net)
    trainer.run()
    assert trainer.state.iteration == 4
    assert not any(torch.equal(a, b) for a, b in zip(before, _params(tiny_net)))


def test_nan_input_stops_before_the_step_and_names_the_cause(tiny_net):
    data = make_batches(num_sites=2, batches=3)
    data[1]["image"][2, 0, 0, 0, 0] = float("nan")
    data[1]["subject_id"] = [f"sub-{i:02d}" for i in range(8)]
    trainer = make_trainer(tiny_net, data, epochs=2)
    StopOnNonFiniteLoss().attach(trainer)
    after_first = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: after_first.append(_params(tiny_net)))
    with pytest.raises(HarmonizeError) as err:
        trainer.run()
    message = str(err.value)
    assert message.startswith("The task loss is nan at iteration 2 (epoch 1, batch 2 of 3); training stopped before "
                              "back-propagating it, so no checkpoint is written after it.")
    assert "Subjects of the batch: ['sub-00', 'sub-01'" in message
    assert "Cause found: the batch's images hold NaN or Inf voxels: check those scans (harmonize validate)" in message
    assert len(after_first) == 1  # the NaN batch never completed its iteration
    assert all(torch.equal(a, b) for a, b in zip(after_first[0], _params(tiny_net)))  # and never stepped
    assert all(torch.isfinite(p).all() for p in tiny_net.parameters())


def test_divergence_says_lower_the_learning_rate(tiny_net):
    data = make_batches(num_sites=2, batches=2)
    trainer = make_trainer(tiny_net, data, epochs=3, lr=1e30)
    StopOnNonFiniteLoss(what="age loss").attach(trainer)
    with pytest.raises(HarmonizeError, match=r"The age loss is (nan|inf) at iteration \d+ \(epoch \d, batch \d of 2\).*"
                                             r"(The inputs are finite, so the training diverged|The network's weights "
                                             r"already hold NaN or Inf \(the previous step diverged\)): lower the "
                                             r"learning rate \(now 1e\+30\) or beta"):
        trainer.run()


def test_inf_target_is_named(tiny_net):
    data = make_batches(num_sites=2, batches=1)
    data[0]["label"][0, 0] = float("inf")
    trainer = make_trainer(tiny_net, data)
    StopOnNonFiniteLoss().attach(trainer)
    with pytest.raises(HarmonizeError, match="Cause found: the batch's targets hold Inf"):
        trainer.run()


@pytest.mark.parametrize("handler", ["StopOnNonFiniteLoss", "RandomRigidAugmentation"])
def test_a_training_handler_on_an_evaluator_is_refused(handler):
    """On an evaluator one would check nothing (no loss), the other would move the evaluated scans."""
    from monai.engines import SupervisedEvaluator

    from harmonize import handlers
    from harmonize.errors import ConfigError

    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=torch.nn.Identity(),
                                    epoch_length=1)
    with pytest.raises(ConfigError, match=f"{handler} is a training handler, but it was attached to a "
                                          "SupervisedEvaluator"):
        getattr(handlers, handler)().attach(evaluator)
