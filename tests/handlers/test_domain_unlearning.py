"""DomainUnlearningHandler: the three updates, their separation, masks, modes, site counts and checkpoints."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from torch import nn

from harmonize.errors import ConfigError
from harmonize.handlers import (
    AlternatingConfusion,
    Confound,
    ConfusionObjective,
    DomainUnlearningHandler,
    GradientReversalObjective,
    HeadSteps,
    HeadWarmup,
    LabelRangeMask,
    RefitHeads,
)
from harmonize.keys import ConfoundKind, Keys, StateKeys
from harmonize.networks import DomainHead

from .conftest import TinyNet, make_batches, make_trainer


def _params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


#: The objective of each mode name the tests use.
OBJECTIVES = {"fused": ConfusionObjective, "alternating": AlternatingConfusion, "dann": GradientReversalObjective}


def _handler(net: nn.Module, num_sites: int = 2, **kwargs) -> DomainUnlearningHandler:
    """A handler over a TinyNet's encoder; ``mode``, ``head_*`` and ``beta`` pick its objective, adversary, weight."""
    torch.manual_seed(1)
    head = DomainHead(4, num_sites, hidden=8, dropout=0.0)
    confound_args = {k: kwargs.pop(k) for k in ("beta", "prior") if k in kwargs}
    objective = OBJECTIVES[kwargs.pop("mode", "fused")]()
    lr, steps = kwargs.pop("head_lr", 1e-3), kwargs.pop("head_steps", 1)
    refit = kwargs.pop("head_refit_steps", 0)
    if "warmup_epochs" in kwargs or "warmup_until_loss" in kwargs:
        kwargs["warmup"] = HeadWarmup(kwargs.pop("warmup_epochs", 0), kwargs.pop("warmup_until_loss", None))
    adversary = RefitHeads(refit, kwargs.pop("head_refit_lr", 1e-2), lr, steps) if refit else HeadSteps(lr, steps)
    return DomainUnlearningHandler(net, "encoder", Confound(head, num_sites, **confound_args), objective=objective,
                                   adversary=adversary, **kwargs)


def _trained_copy(net: nn.Module, data: list[dict], handler_kwargs: dict | None, epochs: int = 1):
    net = copy.deepcopy(net)
    trainer = make_trainer(net, data, epochs=epochs)
    handler = None
    if handler_kwargs is not None:
        handler = _handler(net, **handler_kwargs)
        handler.attach(trainer)
    trainer.run()
    return net, handler, trainer


def test_head_step_never_changes_the_network(tiny_net):
    """Warm-up runs only step 2: the network ends exactly as with the plain trainer, while the head learned."""
    data = make_batches(2)
    plain, _, _ = _trained_copy(tiny_net, data, None)
    warm, handler, _ = _trained_copy(tiny_net, data, {"warmup_epochs": 1})
    assert _same(_params(plain), _params(warm))
    torch.manual_seed(1)
    fresh_head = DomainHead(4, 2, hidden=8, dropout=0.0)
    assert not _same(_params(fresh_head), _params(handler.heads))


def test_fused_with_zero_beta_equals_plain_training(tiny_net):
    data = make_batches(2)
    plain, _, _ = _trained_copy(tiny_net, data, None)
    fused, _, _ = _trained_copy(tiny_net, data, {"mode": "fused", "beta": 0.0})
    assert _same(_params(plain), _params(fused))
    pushed, _, _ = _trained_copy(tiny_net, data, {"mode": "fused", "beta": 10.0})
    assert not _same(_params(plain.encoder), _params(pushed.encoder))
    # the confusion gradient never reaches the task head: it gets the same gradient as without unlearning,
    # though Adam's step differs only through the shared features, so compare after the first step only
    one = data[:1]
    plain1, _, _ = _trained_copy(tiny_net, one, None)
    pushed1, _, _ = _trained_copy(tiny_net, one, {"mode": "fused", "beta": 10.0})
    assert _same(_params(plain1.head), _params(pushed1.head))


def test_confusion_step_changes_extractor_only(tiny_net):
    """Alternating mode: step 3 moves the encoder, and neither the domain head nor the task head."""
    data = make_batches(2, batches=1)
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data)
    handler = _handler(net, mode="alternating", beta=10.0)
    snapshots = {}

    def before_step3(engine):  # registered before attach(): runs after the task and head steps, before step 3
        snapshots.update(net=_params(net), heads=_params(handler.heads))

    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, before_step3)
    handler.attach(trainer)
    trainer.run()
    after = _params(net)
    enc = len(list(net.encoder.parameters()))
    assert not _same(snapshots["net"][:enc], after[:enc]), "step 3 must move the encoder"
    assert _same(snapshots["net"][enc:], after[enc:]), "step 3 must not move the task head"
    assert _same(snapshots["heads"], _params(handler.heads)), "step 3 must not move the domain head"


@pytest.mark.parametrize("mode", ["fused", "alternating", "dann"])
@pytest.mark.parametrize("num_sites", [2, 32])
def test_modes_run_and_log_state(tiny_net, mode, num_sites):
    data = make_batches(num_sites, batch=max(8, num_sites), batches=2)
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data, epochs=2)
    handler = _handler(net, num_sites=num_sites, mode=mode, warmup_epochs=1)
    handler.attach(trainer)
    trainer.run()
    for attr in handler.state_attributes:
        value = getattr(trainer.state, attr)
        assert value is not None
    acc = getattr(trainer.state, f"{StateKeys.DOMAIN_ACC}_site")
    assert 0.0 <= acc <= 1.0
    assert trainer.state.unlearning_phase == mode
    assert [h["epoch"] for h in handler.history] == [1.0, 2.0]
    if mode != "dann":
        conf = getattr(trainer.state, f"{StateKeys.CONFUSION_LOSS}_site")
        assert conf >= math.log(num_sites) - 1e-5  # the confusion loss is never below its minimum log N
    for p in net.parameters():
        assert torch.isfinite(p).all()


def test_head_learns_the_site():
    """With a visible site effect and no confusion, the head's accuracy climbs well above chance."""
    torch.manual_seed(0)
    net = TinyNet()
    data = make_batches(2, batch=16, batches=4)
    trainer = make_trainer(net, data, epochs=8)
    handler = _handler(net, warmup_epochs=8, head_lr=1e-2, head_steps=2)
    handler.attach(trainer)
    trainer.run()
    assert handler.history[-1][f"{StateKeys.DOMAIN_ACC}_site"] > 0.8


def test_masked_samples_contribute_nothing(tiny_net):
    """Samples outside the mask can carry any site label: the head's update is the same."""
    data = make_batches(2, batches=1)
    altered = [dict(data[0])]
    altered[0][Keys.SITE] = data[0][Keys.SITE].clone()
    outside = data[0][Keys.AGE] > 45
    assert outside.any() and (~outside).any()
    altered[0][Keys.SITE][outside] = 1 - altered[0][Keys.SITE][outside]
    mask = LabelRangeMask(0.0, 45.0)
    _, h1, _ = _trained_copy(tiny_net, data, {"sample_mask": mask, "mode": "fused"})
    _, h2, _ = _trained_copy(tiny_net, altered, {"sample_mask": mask, "mode": "fused"})
    assert _same(_params(h1.heads), _params(h2.heads))


def test_prior_is_the_confusion_target(tiny_net):
    """With a prior, the recorded confusion loss is the cross-entropy of the head's softmax against it."""
    data = make_batches(2, batches=1)

    def prior(batch):  # a sample-dependent target
        young = (torch.as_tensor(batch[Keys.AGE]) < 45).float().reshape(-1, 1)
        return young * torch.tensor([[0.9, 0.1]]) + (1 - young) * torch.tensor([[0.2, 0.8]])

    head = nn.Linear(4, 2)  # a confident head, kept fixed (alpha 0): logits (2, -2) whatever the features
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([2.0, -2.0]))
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data)
    DomainUnlearningHandler(net, "encoder", Confound(head, 2, beta=1.0, alpha=0.0, prior=prior)).attach(trainer)
    trainer.run()
    log_p = torch.log_softmax(torch.tensor([2.0, -2.0]), dim=0)
    expected = -(prior(data[0]) * log_p).sum(dim=1).mean()
    recorded = getattr(trainer.state, f"{StateKeys.CONFUSION_LOSS}_{Keys.SITE}")
    assert recorded == pytest.approx(float(expected), rel=1e-5)
    assert recorded != pytest.approx(float(-log_p.mean()), rel=1e-2)  # not the uniform target


def test_fully_masked_batch_changes_no_head(tiny_net):
    data = make_batches(2, batches=1)
    _, handler, trainer = _trained_copy(tiny_net, data, {"sample_mask": LabelRangeMask(500.0, 600.0)})
    torch.manual_seed(1)
    assert _same(_params(DomainHead(4, 2, hidden=8, dropout=0.0)), _params(handler.heads))
    assert all(torch.isfinite(p).all() for p in trainer.network.parameters())


def test_several_confounds_and_continuous_age(tiny_net):
    net = copy.deepcopy(tiny_net)
    data = make_batches(4, batches=2)
    for b in data:
        b[Keys.SEX] = torch.arange(len(b[Keys.SITE])) % 2
    confounds = [
        Confound(DomainHead(4, 4, hidden=8), 4, key=Keys.SITE, beta=5.0),
        Confound(DomainHead(4, 2, hidden=8), 2, key=Keys.SEX, beta=1.0),
        Confound(
            DomainHead(4, 3, hidden=8), 3, key=Keys.AGE, kind=ConfoundKind.CONTINUOUS, bin_edges=[35.0, 55.0], beta=1.0
        ),
    ]
    trainer = make_trainer(net, data)
    handler = DomainUnlearningHandler(net, "encoder", confounds)
    handler.attach(trainer)
    trainer.run()
    for name in ("site", "sex", "age"):
        assert getattr(trainer.state, f"{StateKeys.CONFUSION_LOSS}_{name}") > 0


def test_multi_point_taps_concatenate(tiny_net):
    """A head on two taps reads the pooled outputs of both (4 conv channels + 1 head output = 5 features)."""
    net = copy.deepcopy(tiny_net)
    head = DomainHead(5, 2, hidden=8)
    handler = DomainUnlearningHandler(net, ["encoder.0", "head"], Confound(head, 2))
    trainer = make_trainer(net, make_batches(2, batches=1))
    handler.attach(trainer)
    trainer.run()
    assert getattr(trainer.state, f"{StateKeys.DOMAIN_LOSS}_site") > 0


def test_user_monai_network_by_layer_name():
    """A MONAI network the user already has, unlearned at a layer named as in named_modules()."""
    from monai.networks.nets import Regressor

    torch.manual_seed(0)
    net = Regressor(in_shape=(1, 8, 8, 8), out_shape=(1,), channels=(4, 8), strides=(2, 2))
    data = make_batches(3, batches=2)
    handler = DomainUnlearningHandler(net, "net.layer_1", Confound(DomainHead(8, 3, hidden=8), 3))
    trainer = make_trainer(net, data)
    handler.attach(trainer)
    trainer.run()
    assert getattr(trainer.state, f"{StateKeys.DOMAIN_ACC}_site") >= 0


def test_checkpoint_round_trip(tiny_net):
    data = make_batches(2)
    _, handler, _ = _trained_copy(tiny_net, data, {"mode": "alternating"})
    state = handler.state_dict()
    net = copy.deepcopy(tiny_net)
    other = _handler(net, mode="alternating")
    other.attach(make_trainer(net, data))
    other.load_state_dict(state)
    assert _same(_params(handler.heads), _params(other.heads))
    assert other.adversary.optimizer.state_dict()["state"].keys() == handler.adversary.optimizer.state_dict()["state"].keys()
    assert other.history == handler.history


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head_steps": 0}, r"'head_steps' must be an integer >= 1, got 0 \(int\)"),
        ({"warmup": -1}, r"DomainUnlearningHandler: invalid arguments.\n  - 'warmup' must be an integer >= 0, got -1"),
        ({"warmup_epochs": -1}, r"'warmup_epochs' must be an integer >= 0, got -1 \(int\)"),
        ({"warmup_until_loss": 0.0}, r"'warmup_until_loss' must be a finite number > 0 or None, got 0.0 \(float\)"),
        ({"head_lr": -1.0}, r"'head_lr' must be a finite number > 0, got -1.0 \(float\)"),
        ({"beta": -1.0}, r"Confound 'site': invalid arguments.\n  - 'beta' must be a finite number >= 0, got -1.0 "
                         r"\(float\)"),
        ({"beta": float("nan")}, r"'beta' must be a finite number >= 0, got nan"),
        ({"head_refit_steps": 0.5}, r"'head_refit_steps' must be an integer >= 1, got 0.5 \(float\)"),
        ({"head_refit_steps": 5, "head_refit_lr": 0.0}, r"'head_refit_lr' must be a finite number > 0, got 0.0"),
        ({"head_refit_steps": 5, "mode": "dann"}, "re-fitting adversary would reset the heads"),
    ],
)
def test_bad_arguments_are_named(tiny_net, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _handler(tiny_net, **kwargs)


def test_unknown_layer_name_lists_known_ones(tiny_net):
    with pytest.raises(ConfigError, match="encoderr.*not submodules.*encoder"):
        DomainUnlearningHandler(tiny_net, "encoderr", Confound(DomainHead(4, 2), 2))


def test_missing_batch_key_is_named(tiny_net):
    data = make_batches(2, batches=1)
    del data[0][Keys.SITE]
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data)
    _handler(net).attach(trainer)
    with pytest.raises(KeyError, match="no key 'site'"):
        trainer.run()


def test_site_index_out_of_range_is_named(tiny_net):
    data = make_batches(4, batches=1)
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data)
    _handler(net, num_sites=2).attach(trainer)
    with pytest.raises(ValueError, match="outside 0..1"):
        trainer.run()


@pytest.mark.parametrize("mode", ["fused", "alternating"])
def test_listed_in_train_handlers_equals_attached_after(tiny_net, mode):
    from monai.engines import SupervisedTrainer

    data = make_batches(2)
    attached, _, _ = _trained_copy(tiny_net, data, {"mode": mode})
    net = copy.deepcopy(tiny_net)
    handler = _handler(net, mode=mode)
    SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=data, network=net,
                      optimizer=torch.optim.Adam(net.parameters(), lr=1e-2), loss_function=nn.MSELoss(),
                      epoch_length=len(data), train_handlers=[handler]).run()
    assert _same(_params(attached), _params(net))


def test_checkpoint_restores_before_attach(tiny_net):
    data = make_batches(2)
    _, handler, _ = _trained_copy(tiny_net, data, {"mode": "alternating"})
    net = copy.deepcopy(tiny_net)
    other = _handler(net, mode="alternating")
    other.load_state_dict(handler.state_dict())  # as a CheckpointLoader does, before training starts
    other.attach(make_trainer(net, data))
    restored, saved = other.objective.optimizer.state_dict(), handler.objective.optimizer.state_dict()
    assert saved["state"] and restored["param_groups"] == saved["param_groups"]
    assert all(torch.equal(restored["state"][i][k], v) for i, s in saved["state"].items() for k, v in s.items())


def test_attach_to_other_network_is_refused(tiny_net):
    handler = _handler(tiny_net)
    with pytest.raises(ConfigError, match="different module"):
        handler.attach(make_trainer(TinyNet(), make_batches(2, batches=1)))


@pytest.mark.parametrize("listed", [False, True])
def test_an_engine_without_optimizer_is_refused(tiny_net, listed):
    """An evaluator runs the network but trains nothing: refused at attach (or at start, when listed in handlers)."""
    from monai.engines import SupervisedEvaluator

    data = make_batches(2, batches=1)
    handler = _handler(tiny_net)
    before = _params(tiny_net)
    with pytest.raises(ConfigError, match="attached to a SupervisedEvaluator, which has no optimizer"):
        evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=data, network=tiny_net,
                                        epoch_length=1, val_handlers=[handler] if listed else None)
        if not listed:
            handler.attach(evaluator)
        evaluator.run()
    assert _same(before, _params(tiny_net))


@pytest.mark.parametrize(
    "sites, message",
    [
        ("fraction", "non-integral values \\[0.6000000238418579, 1.399999976158142\\]"),
        ("text", "text values \\['A', 'B'\\], not class indices"),
    ],
)
def test_site_labels_must_be_integer_indices(tiny_net, sites, message):
    """0.6 and 1.4 were truncated to sites 0 and 1 before; text sites must go through the site index."""
    data = make_batches(2, batches=1)
    data[0][Keys.SITE] = (torch.tensor([0.6, 1.4] * 4) if sites == "fraction" else ["A", "B"] * 4)
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data)
    _handler(net).attach(trainer)
    with pytest.raises(ConfigError, match=message):
        trainer.run()


def test_whole_float_and_nan_site_labels_are_indices():
    confound = Confound(DomainHead(4, 3, hidden=8), 3)
    got = confound.targets(torch.tensor([0.0, 2.0, float("nan"), 1.0]))
    assert got.tolist() == [0, 2, -1, 1]
    assert confound.targets([2, 0]).tolist() == [2, 0]


# ------------------------------------------------------------------------------------------------------ re-fit
class _BatchNormNet(TinyNet):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten()
        )


def test_refit_heads_fits_all_batches_from_scratch_and_leaves_the_network_alone():
    torch.manual_seed(0)
    net = _BatchNormNet()
    data = make_batches(2, batch=8, batches=4)
    handler = _handler(net, head_refit_steps=200, head_refit_lr=1e-2)
    params, buffers = _params(net), [b.clone() for b in net.buffers()]
    accuracy = handler.adversary.refit(handler, data)
    assert accuracy["refit_acc_site"] > 0.9  # the site shifts the intensity: a head fitted on all 32 scans reads it
    assert _same(params, _params(net))
    assert _same(buffers, list(net.buffers())), "the re-fit's forward passes must not move BatchNorm statistics"


def test_refit_runs_each_unlearning_epoch(tiny_net):
    data = make_batches(2, batches=2)
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data, epochs=3)
    handler = _handler(net, head_refit_steps=20, warmup_epochs=1)
    calls = []
    original = handler.adversary.fit
    handler.adversary.fit = lambda *a, **k: calls.append(trainer.state.epoch) or original(*a, **k)
    handler.attach(trainer)
    trainer.run()
    assert calls == [2, 3]
    assert f"{StateKeys.REFIT_ACC}_site" in handler.state_attributes
    assert 0.0 <= getattr(trainer.state, f"{StateKeys.REFIT_ACC}_site") <= 1.0
    assert "refit_acc_site" not in handler.history[0] and 0.0 <= handler.history[-1]["refit_acc_site"] <= 1.0


def test_confound_names_every_bad_setting_at_once():
    with pytest.raises(ConfigError) as err:
        Confound(DomainHead(4, 2), 2, kind="continuos", beta=-1.0, alpha=float("inf"), prior=3.0,
                 class_weights=[1.0, 2.0, 3.0])
    assert err.value.message == "Confound 'site': invalid arguments."
    assert err.value.problems[0].startswith("Argument 'kind': By 'continuos', did you mean 'continuous'?")
    assert err.value.problems[1:] == ["'beta' must be a finite number >= 0, got -1.0 (float)",
                                      "'alpha' must be a finite number >= 0, got inf (float)",
                                      "'prior' must be a function of the batch, got 3.0",
                                      "'class_weights' has 3 values, expected num_classes = 2"]
    with pytest.raises(ConfigError) as err:
        Confound(DomainHead(4, 3), 3, key=Keys.AGE, kind=ConfoundKind.CONTINUOUS, bin_edges=[40.0])
    assert err.value.problems == ["a continuous confound needs bin_edges with num_classes - 1 = 2 values (see "
                                  "harmonize.handlers.quantile_bin_edges)"]
    with pytest.raises(ConfigError, match=r"'num_classes' must be an integer >= 2, got 1 \(int\)"):
        Confound(DomainHead(4, 2), 1)
    with pytest.raises(ConfigError) as err:  # the class weights' values join the other problems
        Confound(DomainHead(4, 2), 2, alpha=-1.0, class_weights=[1.0, -2.0])
    assert err.value.problems == ["'alpha' must be a finite number >= 0, got -1.0 (float)",
                                  "'class_weights': DomainLoss: weight must be one non-negative finite number per "
                                  "domain (2 or more), not all zero; got [1.0, -2.0]."]


def test_each_confound_owns_its_weighted_domain_loss():
    confound = Confound(DomainHead(4, 2), 2, class_weights=[1.0, 3.0])
    assert confound.domain_loss.weight.tolist() == [1.0, 3.0]
    logits, target = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), torch.tensor([0, 0, -1])
    per_sample = torch.nn.functional.cross_entropy(logits[:2], target[:2], reduction="none")
    # the sample whose target is MISSING (-1) is left out; the others weigh their class's weight (both class 0: 1)
    assert float(confound.domain_loss(logits, target, mask=target != -1)) == pytest.approx(float(per_sample.mean()))
    assert Confound(DomainHead(4, 2), 2).domain_loss.weight is None


@pytest.mark.parametrize("until, warmup", [(None, [1]), (1e9, [1]), (1e-9, [1, 2, 3])])
def test_warmup_goes_on_while_the_task_loss_is_high(tiny_net, until, warmup):
    data = make_batches(2, batches=1)
    net = copy.deepcopy(tiny_net)
    trainer = make_trainer(net, data, epochs=6)
    handler = _handler(net, warmup_epochs=1, warmup_until_loss=until)
    handler.attach(trainer)
    phases = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: phases.append(e.state.unlearning_phase))
    trainer.run()
    # a loss at or above 1e-9 never ends the warm-up before half the run; one above 1e9 never extends it
    assert [i + 1 for i, p in enumerate(phases) if p == "warmup"] == warmup
    assert handler.warmup.epochs == warmup[-1] and handler.state_dict()["warmup_epochs"] == warmup[-1]
    restored = _handler(copy.deepcopy(tiny_net), warmup_epochs=1, warmup_until_loss=until)
    restored.load_state_dict(handler.state_dict())
    assert restored.warmup.epochs == warmup[-1]


@pytest.mark.parametrize("mode", ["fused", "dann"])
def test_under_mixed_precision_heads_and_losses_stay_float32(tiny_net, mode):
    """The trainer's iteration under autocast (bfloat16 on the CPU, as MONAI's ``amp`` runs it under float16 on a GPU):
    the network computes in low precision, the heads read float32 features and give float32 logits."""
    from monai.engines import SupervisedTrainer

    def under_autocast(engine, batch):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return engine._iteration(engine, batch)

    data = make_batches(2)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=data, network=tiny_net,
                                optimizer=torch.optim.Adam(tiny_net.parameters(), lr=1e-2), loss_function=nn.MSELoss(),
                                epoch_length=len(data), iteration_update=under_autocast)
    handler = _handler(tiny_net, mode=mode, warmup_epochs=1)
    handler.attach(trainer)
    seen = []
    handler.heads["site"].register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    encoded = []
    tiny_net.encoder[0].register_forward_hook(lambda m, args, out: encoded.append(out.dtype))  # the convolution
    trainer.run()
    assert torch.bfloat16 in encoded  # the network did run in low precision
    assert seen and set(seen) == {(torch.float32, torch.float32)}
    assert all(math.isfinite(h[f"{StateKeys.DOMAIN_LOSS}_site"]) for h in handler.history)
    if mode == "fused":
        assert math.isfinite(handler.history[-1][f"{StateKeys.CONFUSION_LOSS}_site"])
