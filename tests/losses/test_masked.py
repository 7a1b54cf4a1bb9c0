"""Tests of harmonize.losses.MaskedLoss (semi-supervised task loss)."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss
from torch import nn

from harmonize.errors import ConfigError
from harmonize.losses import MaskedLoss

NAN = float("nan")


def test_nan_ages_are_ignored() -> None:
    pred = torch.tensor([[50.0], [60.0], [70.0], [80.0]], requires_grad=True)
    age = torch.tensor([[52.0], [NAN], [64.0], [NAN]])
    loss = MaskedLoss(nn.MSELoss(reduction="none"))(pred, age)
    assert float(loss.detach()) == pytest.approx((2.0**2 + 6.0**2) / 2)  # 20
    loss.backward()
    # d/dpred of mean((pred - age)^2) over the 2 labelled samples: (pred - age); zero for the unlabelled ones.
    assert pred.grad.squeeze(1).tolist() == [-2.0, 0.0, 6.0, 0.0]


def test_fully_labelled_batch_equals_wrapped_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(5, 1, generator=gen), torch.randn(5, 1, generator=gen)
    assert torch.equal(MaskedLoss(nn.MSELoss())(pred, target), nn.MSELoss()(pred, target))
    assert torch.equal(MaskedLoss(nn.L1Loss(reduction="none"))(pred, target), nn.L1Loss()(pred, target))


def test_segmentation_samples_labelled_minus_one_are_ignored() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 4, 6, 6, 6, generator=gen, requires_grad=True)
    labels = torch.randint(0, 4, (4, 1, 6, 6, 6), generator=gen).float()
    labels[1] = -1.0
    labels[3] = -1.0
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    loss = MaskedLoss(dice_ce, ignore_value=-1)(logits, labels)
    expected = dice_ce(logits[[0, 2]], labels[[0, 2]])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert float(logits.grad[[1, 3]].abs().max()) == 0.0
    assert float(logits.grad[[0, 2]].abs().max()) > 0.0


def test_partially_ignored_label_map_stays_labelled() -> None:
    labels = torch.zeros(2, 1, 4, 4)
    labels[0, 0, 0, 0] = -1.0  # one ignored voxel does not make the sample unlabelled
    labels[1] = -1.0
    assert MaskedLoss(nn.MSELoss(), ignore_value=-1).labelled(labels).tolist() == [True, False]
    int_labels = labels.long()
    assert MaskedLoss(nn.MSELoss(), ignore_value=-1).labelled(int_labels).tolist() == [True, False]
    assert MaskedLoss(nn.MSELoss()).labelled(int_labels).tolist() == [True, True]


def test_any_non_finite_element_makes_a_sample_unlabelled() -> None:
    target = torch.tensor([[1.0, 2.0], [NAN, 2.0], [float("inf"), 0.0], [0.0, 0.0]])
    assert MaskedLoss(nn.MSELoss()).labelled(target).tolist() == [True, False, False, True]


@pytest.mark.parametrize("ignore_value", [None, -1])
def test_all_unlabelled_gives_zero_with_a_graph(ignore_value: float | None) -> None:
    pred = torch.tensor([[1.0], [float("inf")], [3.0]], requires_grad=True)
    target = torch.full((3, 1), NAN if ignore_value is None else -1.0)
    loss = MaskedLoss(nn.MSELoss(reduction="none"), ignore_value=ignore_value)(pred, target)
    assert loss.ndim == 0 and float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert pred.grad.tolist() == [[0.0], [0.0], [0.0]]


def test_meta_tensor_inputs() -> None:
    pred = MetaTensor(torch.tensor([[1.0], [2.0], [4.0]]))
    target = MetaTensor(torch.tensor([[0.0], [NAN], [1.0]]))
    assert float(MaskedLoss(nn.MSELoss(reduction="none"))(pred, target)) == pytest.approx((1.0 + 9.0) / 2)


def test_inside_monai_supervised_trainer() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
    images = torch.ones(4, 3)
    batches = [
        {"image": images, "label": torch.tensor([[1.0], [NAN], [1.0], [NAN]])},
        {"image": images, "label": torch.full((4, 1), NAN)},  # no label at all: a no-op step, not NaN
    ]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=MaskedLoss(nn.MSELoss(reduction="none")),
        amp=False,
    )
    trainer.run()
    # first step: loss mean((0 - 1)^2) = 1, grad wrt bias -2, wrt each weight -2 -> all become 0.2; then unchanged.
    torch.testing.assert_close(net.bias.detach(), torch.tensor([0.2]))
    torch.testing.assert_close(net.weight.detach(), torch.full((1, 3), 0.2))
    assert float(trainer.state.output[0]["loss"]) == 0.0


def test_batch_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"got pred \(3, 1\) and target \(2, 1\)"):
        MaskedLoss(nn.MSELoss())(torch.zeros(3, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"got pred \(3, 1\) and target \(\)"):
        MaskedLoss(nn.MSELoss())(torch.zeros(3, 1), torch.tensor(1.0))


def test_bad_options_raise_in_init() -> None:
    with pytest.raises(TypeError, match=r"loss must be a loss instance such as nn.MSELoss\(reduction='none'\)"):
        MaskedLoss(nn.MSELoss)  # the class, not an instance
    with pytest.raises(TypeError, match="loss must be a loss instance"):
        MaskedLoss("mse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ignore_value must be finite, got nan"):
        MaskedLoss(nn.MSELoss(), ignore_value=NAN)
    with pytest.raises(ConfigError, match="ignore_value must be a number or None, got '-1'"):
        MaskedLoss(nn.MSELoss(), ignore_value="-1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ignore_value must be a number or None, got True"):
        MaskedLoss(nn.MSELoss(), ignore_value=True)
