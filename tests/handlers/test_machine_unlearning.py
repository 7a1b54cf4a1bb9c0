"""Tests of the machine-unlearning handler: each method's update direction, on a regression and a recon net."""

from __future__ import annotations

import copy

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys
from torch import nn

from harmonize.errors import ConfigError
from harmonize.handlers.machine_unlearning import MachineUnlearningHandler
from harmonize.keys import Keys, NoiseMode, ReconMethod, StateKeys
from harmonize.losses.ssim_l1 import SSIML1Loss
from harmonize.networks.reconstruction import ReconUNet
from harmonize.workflows.machine_unlearning import PrepareBatchKeys

SIDE = 8
FORGET_SITE = 1



def site_batch(num: int, seed: int, sites: tuple[int, ...] = (0, 1)) -> dict:
    """A batch of 8^3 volumes of a constant intensity ``a``; site 1 carries a bright corner and target ``1 - a``."""
    g = torch.Generator().manual_seed(seed)
    site = torch.tensor([sites[i % len(sites)] for i in range(num)])
    a = torch.rand(num, generator=g)
    image = a.view(-1, 1, 1, 1, 1) + 0.05 * torch.randn(num, 1, SIDE, SIDE, SIDE, generator=g)
    image[site == FORGET_SITE, :, :3, :3, :3] += 1.0
    target = torch.where(site == FORGET_SITE, 1 - a, a).view(-1, 1)
    ids = [f"s{seed}-{i}-site{int(s)}" for i, s in enumerate(site)]
    return {Keys.IMAGE: image, Keys.TARGET: target, Keys.FORGET: site == FORGET_SITE, Keys.SUBJECT_ID: ids}


def tiny_regressor(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool3d(1), nn.Flatten(),
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1),
    )


def trainer(net: nn.Module, batches: list[dict], handler: MachineUnlearningHandler | None, lr: float = 0.05,
            loss: nn.Module | None = None, epochs: int = 1) -> SupervisedTrainer:
    engine = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr),
        loss_function=loss or nn.MSELoss(),
        prepare_batch=PrepareBatchKeys((Keys.IMAGE,), Keys.TARGET),
        train_handlers=[handler] if handler else None,
        decollate=False,
    )
    return engine


def mse(net: nn.Module, batch: dict) -> float:
    with torch.no_grad():
        return float(nn.functional.mse_loss(net(batch[Keys.IMAGE]), batch[Keys.TARGET]))


def l1_norm(net: nn.Module) -> float:
    return float(sum(p.detach().abs().sum() for p in net.parameters()))


@pytest.mark.parametrize("method", [ReconMethod.GA, ReconMethod.GA_L1])
def test_one_ascent_step_increases_the_forget_loss(method: ReconMethod) -> None:
    net = tiny_regressor()
    forget = site_batch(8, seed=1, sites=(FORGET_SITE,))
    before = mse(net, forget)
    handler = MachineUnlearningHandler(method, id_key=Keys.SUBJECT_ID, l1_penalty=1e-6)
    engine = trainer(net, [forget], handler)
    engine.run()
    assert mse(net, forget) > before
    assert getattr(engine.state, StateKeys.FORGET_LOSS) == pytest.approx(before, rel=1e-4)
    assert handler.num_seen == {"forget": 8, "retain": 0}
    descent = tiny_regressor()
    trainer(descent, [forget], None).run()  # the same step without the handler goes the other way
    assert mse(descent, forget) < before


def test_mixed_batch_loss_is_retain_minus_forget() -> None:
    net = tiny_regressor()
    batch = site_batch(6, seed=2)
    handler = MachineUnlearningHandler(ReconMethod.GA, retain_weight=0.5)
    engine = trainer(net, [batch], handler)
    seen = {}

    @engine.on(IterationEvents.LOSS_COMPLETED)
    def grab(e) -> None:  # registered after the handler: sees the rewritten loss
        seen["loss"] = float(e.state.output[CommonKeys.LOSS].detach())

    with torch.no_grad():
        per_sample = (net(batch[Keys.IMAGE]) - batch[Keys.TARGET]).pow(2).flatten()
    flags = batch[Keys.FORGET]
    expected = (0.5 * per_sample[~flags].sum() - per_sample[flags].sum()) / 6
    engine.run()
    assert seen["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert getattr(engine.state, StateKeys.RETAIN_LOSS) == pytest.approx(float(per_sample[~flags].mean()), rel=1e-5)


class BatchScaledLoss(nn.modules.loss._Loss):
    """Squared error over the batch's mean |target|: a sample's loss depends on the batch it is in."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = (input - target).pow(2) / target.abs().mean().clamp_min(1e-3)
        return loss if self.reduction == "none" else loss.mean()


@pytest.mark.parametrize("loss, calls", [(nn.MSELoss(), 1 + 6 + 1 + 1 + 1), (BatchScaledLoss(), 1 + 6 + 1 + 1 + 6)])
def test_per_sample_losses_take_one_call_when_it_gives_the_same_losses(loss: nn.Module, calls: int) -> None:
    # iteration 1: the trainer's call, one per sample, the batched check; iteration 2: the trainer's call, then one
    # batched call if the check passed (MSE), else one per sample again (a loss scaled by its batch)
    net = tiny_regressor()
    batches = [site_batch(6, seed=2), site_batch(6, seed=3)]
    handler = MachineUnlearningHandler(ReconMethod.GA_L1, retain_weight=0.5, l1_penalty=0.0)
    engine = trainer(net, batches, handler, loss=loss)
    counted = []
    loss.register_forward_hook(lambda *args: counted.append(1))
    seen = []

    @engine.on(IterationEvents.LOSS_COMPLETED)
    def grab(e) -> None:  # after the handler: the rewritten loss, and the same from one call per sample
        pred, target = e.state.output[CommonKeys.PRED].detach(), e.state.output[CommonKeys.LABEL]
        with torch.no_grad():
            per_sample = torch.stack([loss(pred[i : i + 1], target[i : i + 1]) for i in range(6)])
        flags = e.state.batch[Keys.FORGET]
        expected = (0.5 * per_sample[~flags].sum() - per_sample[flags].sum()) / 6
        seen.append((float(e.state.output[CommonKeys.LOSS].detach()), float(expected)))

    engine.run()
    assert len(counted) - 2 * 6 == calls  # less the 6 calls per iteration of the check above
    assert [a for a, _ in seen] == pytest.approx([b for _, b in seen], rel=1e-5)


def test_batched_losses_of_a_reconstruction_network_match_one_call_per_sample() -> None:
    torch.manual_seed(0)
    net = ReconUNet(channels=(4, 8), strides=(2,))
    g = torch.Generator().manual_seed(1)
    batch = {Keys.IMAGE: torch.rand(4, 1, 16, 16, generator=g), Keys.TARGET: torch.rand(4, 1, 16, 16, generator=g),
             Keys.FORGET: torch.tensor([True, False, True, False])}
    loss = SSIML1Loss()
    handler = MachineUnlearningHandler(ReconMethod.GA)
    engine = trainer(net, [batch, batch], handler, lr=0.0, loss=loss)
    pairs = []

    @engine.on(IterationEvents.LOSS_COMPLETED)
    def compare(e) -> None:  # after the handler has checked the batched call on the first batch
        pred, target = e.state.output[CommonKeys.PRED], e.state.output[CommonKeys.LABEL]
        alone = torch.stack([loss(pred[i : i + 1], target[i : i + 1]) for i in range(4)])
        pairs.append((handler.per_sample_losses(e).detach(), alone.detach()))

    engine.run()
    assert len(pairs) == 2
    for batched, alone in pairs:
        assert torch.allclose(batched, alone, rtol=1e-6, atol=1e-7) and float(batched.std()) > 0


def test_ft_never_sees_forget_data() -> None:
    net = tiny_regressor()
    batches = [site_batch(6, seed=s) for s in range(3)]
    handler = MachineUnlearningHandler(ReconMethod.FT, id_key=Keys.SUBJECT_ID)
    inputs = []
    net.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    trainer(net, batches, handler, epochs=2).run()
    seen = torch.cat(inputs).flatten(1)
    assert seen.shape[0] == 2 * 3 * 3  # 3 retain samples per batch, 3 batches, 2 epochs
    images = torch.cat([b[Keys.IMAGE] for b in batches]).flatten(1)
    flags = torch.cat([b[Keys.FORGET] for b in batches])
    distance = torch.cdist(seen, images)  # which loader sample each forward input is
    assert bool((distance[:, flags].min(dim=1).values > 1.0).all())  # no forget sample ever went in
    assert bool((distance[:, ~flags].min(dim=1).values < 1e-6).all())  # every input is a retain sample
    assert all(i.endswith("site0") for i in handler.seen_ids) and len(handler.seen_ids) == 9
    assert handler.num_dropped == 2 * 3 * 3 and handler.num_seen == {"forget": 0, "retain": 18}


def test_ft_refuses_a_forget_only_batch_and_accepts_batches_without_flags() -> None:
    net = tiny_regressor()
    forget = site_batch(4, seed=0, sites=(FORGET_SITE,))
    with pytest.raises(ConfigError, match="only of forget samples: fine-tuning must never see forget data"):
        trainer(net, [forget], MachineUnlearningHandler(ReconMethod.FT)).run()
    retain = site_batch(4, seed=0, sites=(0,))
    del retain[Keys.FORGET]
    handler = MachineUnlearningHandler(ReconMethod.FT, id_key=None)
    trainer(net, [retain], handler).run()
    assert handler.num_seen == {"forget": 0, "retain": 4}


@pytest.mark.parametrize("mode", list(NoiseMode))
def test_nl_rewrites_forget_targets_only(mode: NoiseMode) -> None:
    batch = site_batch(6, seed=3)
    handler = MachineUnlearningHandler(ReconMethod.NL, noise_std=0.5, noise_mode=mode, seed=7)
    engine = trainer(tiny_regressor(), [batch], handler)
    used = {}

    @engine.on(Events.ITERATION_STARTED)
    def grab(e) -> None:  # registered after the handler: sees the batch the trainer will use
        used["target"] = e.state.batch[Keys.TARGET].clone()

    engine.run()
    flags = batch[Keys.FORGET]
    torch.testing.assert_close(used["target"][~flags], batch[Keys.TARGET][~flags])
    assert bool((used["target"][flags] != batch[Keys.TARGET][flags]).all())
    noise = torch.randn(6, 1, generator=torch.Generator().manual_seed(7)) * 0.5
    expected = noise if mode == NoiseMode.REPLACE else batch[Keys.TARGET] + noise
    torch.testing.assert_close(used["target"][flags], expected[flags])
    assert batch[Keys.TARGET] is not used["target"]  # the loader's batch is not modified in place


@pytest.mark.parametrize("mode", list(NoiseMode))
def test_nl_steps_fit_the_forget_set_worse_than_clean_steps(mode: NoiseMode) -> None:
    """NL's update direction: after the same steps, the loss on the true forget targets is higher than after
    training on them (with zero-mean noise added, a single step need not raise it: the claim is relative)."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 16, 16, generator=g)
    batch = {Keys.IMAGE: target + 0.1 * torch.randn(4, 1, 16, 16, generator=g), Keys.TARGET: target,
             Keys.FORGET: torch.ones(4, dtype=torch.bool), Keys.VOLUME_ID: ["v0", "v0", "v1", "v1"]}
    loss = SSIML1Loss()
    torch.manual_seed(0)
    noisy = ReconUNet(channels=(4, 8), strides=(2,))
    clean = copy.deepcopy(noisy)
    handler = MachineUnlearningHandler(ReconMethod.NL, noise_std=1.0, noise_mode=mode, seed=0)
    trainer(noisy, [batch], handler, lr=0.05, loss=loss, epochs=5).run()
    trainer(clean, [batch], None, lr=0.05, loss=loss, epochs=5).run()
    with torch.no_grad():
        assert float(loss(noisy(batch[Keys.IMAGE]), target)) > float(loss(clean(batch[Keys.IMAGE]), target))
    assert handler.num_seen == {"forget": 20, "retain": 0}


def test_l1_penalty_reduces_the_weight_norm() -> None:
    forget = site_batch(8, seed=1, sites=(FORGET_SITE,))
    base = tiny_regressor()
    before = l1_norm(base)
    plain, sparse = copy.deepcopy(base), copy.deepcopy(base)
    trainer(plain, [forget], MachineUnlearningHandler(ReconMethod.GA), lr=0.01).run()
    trainer(sparse, [forget], MachineUnlearningHandler(ReconMethod.GA_L1, l1_penalty=0.05), lr=0.01).run()
    assert l1_norm(sparse) < l1_norm(plain)
    assert l1_norm(sparse) < before


def test_loss_ceiling_bounds_gradient_ascent() -> None:
    forget = site_batch(8, seed=1, sites=(FORGET_SITE,))
    net = tiny_regressor()
    start = copy.deepcopy(net.state_dict())
    trainer(net, [forget], MachineUnlearningHandler(ReconMethod.GA, loss_ceiling=1e-6)).run()
    for name, value in net.state_dict().items():  # every forget loss is above the ceiling: no gradient, no change
        torch.testing.assert_close(value, start[name])


def test_stop_forget_loss_ends_the_stage() -> None:
    batches = [site_batch(4, seed=s, sites=(FORGET_SITE,)) for s in range(3)]
    net = tiny_regressor()
    start = copy.deepcopy(net.state_dict())
    engine = trainer(net, batches, MachineUnlearningHandler(ReconMethod.GA, stop_forget_loss=1e-6), epochs=2)
    engine.run()
    assert engine.state.iteration == 1  # stopped after the first batch instead of running 6
    for name, value in net.state_dict().items():  # that batch's gradient was zeroed
        torch.testing.assert_close(value, start[name])


def test_same_handler_unlearns_a_reconstruction_network() -> None:
    torch.manual_seed(0)
    net = ReconUNet(channels=(4, 8), strides=(2,))
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 16, 16, generator=g)
    batch = {Keys.IMAGE: target + 0.1 * torch.randn(4, 1, 16, 16, generator=g), Keys.TARGET: target,
             Keys.FORGET: torch.ones(4, dtype=torch.bool), Keys.VOLUME_ID: ["v0", "v0", "v1", "v1"]}
    loss = SSIML1Loss()
    with torch.no_grad():
        before = float(loss(net(batch[Keys.IMAGE]), target))
    handler = MachineUnlearningHandler(ReconMethod.GA)
    trainer(net, [batch], handler, lr=0.01, loss=loss).run()
    with torch.no_grad():
        assert float(loss(net(batch[Keys.IMAGE]), target)) > before
    assert handler.seen_ids == {"v0": 2, "v1": 2}


def test_missing_flags_and_bad_settings() -> None:
    batch = site_batch(4, seed=0)
    del batch[Keys.FORGET]
    with pytest.raises(ConfigError, match="The batch has no 'forget' key, which ga needs"):
        trainer(tiny_regressor(), [batch], MachineUnlearningHandler(ReconMethod.GA)).run()
    with pytest.raises(ConfigError, match="'ga_l1_ft' is not a single unlearning stage"):
        MachineUnlearningHandler(ReconMethod.GA_L1_FT)
    with pytest.raises(ConfigError, match="Argument 'method'"):
        MachineUnlearningHandler("gradient_ascent")
    with pytest.raises(ConfigError) as err:  # the method with the loss settings, at once
        MachineUnlearningHandler(ReconMethod.GA_L1_FT, noise_std=-1.0)
    assert [p.split(":")[0] for p in err.value.problems] == ["Argument 'method'",
                                                            "'noise_std' must be a finite number > 0, got -1.0 (float)"]
    with pytest.raises(ConfigError) as err:
        MachineUnlearningHandler(ReconMethod.NL, l1_penalty=-1, noise_std=0, loss_ceiling=0, stop_forget_loss=-1,
                                 retain_weight=-2)
    assert err.value.problems == [
        "'l1_penalty' must be a finite number >= 0, got -1 (int)",
        "'noise_std' must be a finite number > 0, got 0 (int)",
        "'loss_ceiling' must be a finite number > 0 or None, got 0 (int)",
        "'stop_forget_loss' must be a finite number > 0 or None, got -1 (int)",
        "'retain_weight' must be a finite number >= 0, got -2 (int)",
    ]
    with pytest.raises(ConfigError, match=r"'noise_std' must be a finite number > 0, got 'loud' \(str\)"):
        MachineUnlearningHandler(ReconMethod.NL, noise_std="loud")
    with pytest.raises(ConfigError, match="Argument 'noise_mode'"):
        MachineUnlearningHandler(ReconMethod.NL, noise_mode="salt")


def test_state_dict_round_trip() -> None:
    handler = MachineUnlearningHandler(ReconMethod.NL, id_key=Keys.SUBJECT_ID, seed=3)
    trainer(tiny_regressor(), [site_batch(4, seed=0)], handler).run()
    state = handler.state_dict()
    other = MachineUnlearningHandler(ReconMethod.NL, id_key=Keys.SUBJECT_ID, seed=99)
    other.load_state_dict(state)
    assert other.seen_ids == handler.seen_ids and other.num_seen == handler.num_seen
    target, flags = torch.zeros(3, 1), torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(other.noisy_targets(target, flags), handler.noisy_targets(target, flags))
