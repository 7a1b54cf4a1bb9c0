"""Tests of the unlearning workflow: methods as SupervisedTrainer stages, on a non-reconstruction model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader
from torch import nn

from harmonize.errors import ConfigError
from harmonize.keys import Keys, ReconMethod
from harmonize.networks import BrainAgeRegressor
from harmonize.workflows.machine_unlearning import (
    METHOD_STAGES,
    MachineUnlearningSettings,
    PrepareBatchKeys,
    Stopwatch,
    load_model,
    method_iterations,
    reinitialised_copy,
    run_unlearning,
    train_stage,
)

SIDE = 8
FORGET_SITE = 1



def site_samples(num: int, seed: int, site: int) -> list[dict]:
    """8^3 volumes of intensity ``a``; the forget site has a bright corner and target ``1 - a`` (else ``a``)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num):
        a = float(torch.rand(1, generator=g))
        image = a + 0.05 * torch.randn(1, SIDE, SIDE, SIDE, generator=g)
        if site == FORGET_SITE:
            image[:, :3, :3, :3] += 1.0
        target = torch.tensor([1 - a if site == FORGET_SITE else a])
        out.append({Keys.IMAGE: image, Keys.TARGET: target, Keys.FORGET: torch.tensor(site == FORGET_SITE),
                    Keys.SUBJECT_ID: f"site{site}-{seed}-{i}", Keys.SITE: site})
    return out


def regressor() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool3d(1), nn.Flatten(),
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1),
    )


def mse(net: nn.Module, data: list[dict]) -> float:
    with torch.no_grad():
        x = torch.stack([d[Keys.IMAGE] for d in data])
        return float(nn.functional.mse_loss(net(x), torch.stack([d[Keys.TARGET] for d in data])))


@pytest.fixture(scope="module")
def cohort() -> dict:
    """Two sites; the original regressor (trained on both) fits the forget site; the forget site must go."""
    data = {
        "retain": site_samples(32, 0, 0), "forget": site_samples(16, 1, FORGET_SITE),
        "retain_test": site_samples(16, 2, 0), "forget_test": site_samples(16, 3, FORGET_SITE),
    }
    settings = MachineUnlearningSettings(
        learning_rate=1e-2, ft_epochs=10, ga_epochs=3, nl_epochs=5, oracle_epochs=40, id_key=Keys.SUBJECT_ID,
        noise_std=0.5, loss_ceiling=0.5, seed=0,
    )
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        original = regressor()
    both = DataLoader(data["retain"] + data["forget"], batch_size=8, shuffle=True, generator=g)
    train_stage(original, both, 40, settings)
    loaders = {
        "retain": DataLoader(data["retain"], batch_size=8, shuffle=True, generator=g),
        "forget": DataLoader(data["forget"], batch_size=8, shuffle=True, generator=g),
    }
    return {**data, "settings": settings, "original": original, "loaders": loaders}


def test_original_fits_both_sites(cohort: dict) -> None:
    assert mse(cohort["original"], cohort["retain_test"]) < 0.005
    assert mse(cohort["original"], cohort["forget_test"]) < 0.02


def test_regressor_forgets_a_site(cohort: dict) -> None:
    original = cohort["original"]
    before = {k: v.clone() for k, v in original.state_dict().items()}
    model, seconds = run_unlearning(
        ReconMethod.GA_L1_FT, original, cohort["loaders"]["retain"], cohort["loaders"]["forget"], cohort["settings"]
    )
    assert seconds > 0
    assert mse(model, cohort["forget_test"]) > 20 * mse(original, cohort["forget_test"])  # the site is forgotten
    assert mse(model, cohort["retain_test"]) < 0.005  # the other site is still fitted
    for name, value in original.state_dict().items():  # the original is left untouched
        torch.testing.assert_close(value, before[name])


@pytest.fixture(scope="module")
def brain_age_original(cohort: dict) -> nn.Module:
    """The project's brain-age network (BatchNorm VGG encoder + regressor, the paper's ReLU) trained on both sites."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        original = BrainAgeRegressor(spatial_dims=3, channels=(4, 8), feature_dim=8, hidden=8, act="relu")
    both = DataLoader(cohort["retain"] + cohort["forget"], batch_size=8, shuffle=True,
                      generator=torch.Generator().manual_seed(0))
    train_stage(original, both, 40, cohort["settings"])
    return original.eval()  # BatchNorm: evaluate with the running statistics


@pytest.mark.parametrize("method", [ReconMethod.GA_L1_FT, ReconMethod.NL_FT])
def test_brain_age_model_forgets_a_site(cohort: dict, brain_age_original: nn.Module, method: ReconMethod) -> None:
    """The same handler (through run_unlearning's stages) makes the brain-age network forget one site."""
    original = brain_age_original
    assert mse(original, cohort["forget_test"]) < 0.02  # the original fits the forget site's mapping
    model, _ = run_unlearning(
        method, original, cohort["loaders"]["retain"], cohort["loaders"]["forget"], cohort["settings"]
    )
    model.eval()
    assert mse(model, cohort["forget_test"]) > 10 * mse(original, cohort["forget_test"])
    assert mse(model, cohort["retain_test"]) < 0.01


def test_oracle_is_trained_from_scratch_on_retain(cohort: dict) -> None:
    loaders = cohort["loaders"]
    oracle, _ = run_unlearning(ReconMethod.ORACLE, cohort["original"], loaders["retain"], None, cohort["settings"])
    assert mse(oracle, cohort["retain_test"]) < 0.005
    assert mse(oracle, cohort["forget_test"]) > 0.1  # never saw the forget site's mapping


@pytest.mark.parametrize("method", [m for m in METHOD_STAGES if m != ReconMethod.ORACLE])
def test_every_method_runs_and_returns_a_new_model(cohort: dict, method: ReconMethod) -> None:
    model, seconds = run_unlearning(
        method, cohort["original"], cohort["loaders"]["retain"], cohort["loaders"]["forget"], cohort["settings"]
    )
    assert model is not cohort["original"] and seconds > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_stopwatch_sums_the_stages_and_the_calls(cohort: dict) -> None:
    loaders, settings = cohort["loaders"], cohort["settings"]
    watch = Stopwatch()
    _, seconds = run_unlearning(ReconMethod.GA_L1_FT, cohort["original"], loaders["retain"], loaders["forget"],
                                settings, stopwatch=watch)
    assert watch.wall == seconds and watch.cpu > 0  # the returned seconds are the wall time of both stages
    stages = Stopwatch()
    for stage, loader in ((ReconMethod.GA_L1, loaders["forget"]), (ReconMethod.FT, loaders["retain"])):
        _, stage_seconds = train_stage(load_model(cohort["original"]), loader, 1, settings, stage=stage,
                                       stopwatch=stages)
        assert stage_seconds > 0
    first = (stages.wall, stages.cpu)
    train_stage(load_model(cohort["original"]), loaders["retain"], 1, settings, stopwatch=stages)
    assert stages.wall > first[0] and stages.cpu > first[1]  # a further stage adds to what was timed


def test_ft_stage_sees_no_forget_subject(cohort: dict) -> None:
    mixed = DataLoader(cohort["retain"][:8] + cohort["forget"][:8], batch_size=4, shuffle=True,
                       generator=torch.Generator().manual_seed(1))
    handler, _ = train_stage(load_model(cohort["original"]), mixed, 2, cohort["settings"], stage=ReconMethod.FT)
    assert handler is not None
    assert set(handler.seen_ids) <= {s[Keys.SUBJECT_ID] for s in cohort["retain"][:8]}
    assert handler.num_seen["forget"] == 0


def test_checkpoints_and_reinitialisation(cohort: dict, tmp_path: Path) -> None:
    path = tmp_path / "original.pt"
    torch.save(cohort["original"].state_dict(), path)
    loaded = load_model(path, regressor)
    x = torch.stack([d[Keys.IMAGE] for d in cohort["retain_test"]])
    torch.testing.assert_close(loaded(x), cohort["original"](x))
    with pytest.raises(ConfigError, match="needs settings.network_factory"):
        load_model(path)
    with pytest.raises(ConfigError, match="does not fit the network built by network_factory"):
        load_model(path, lambda: nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="Cannot load checkpoint"):
        load_model(tmp_path / "missing.pt", regressor)
    a, b = reinitialised_copy(cohort["original"], seed=3), reinitialised_copy(cohort["original"], seed=3)
    torch.testing.assert_close(a(x), b(x))
    assert not torch.allclose(a(x), cohort["original"](x))


def test_progress_stage_logs_a_line_per_epoch_in_a_log(cohort: dict, caplog) -> None:
    settings = MachineUnlearningSettings(progress=True, ft_epochs=1)
    with caplog.at_level(logging.INFO, logger="harmonize.progress"):  # pytest's captured stderr is no terminal
        model, seconds = run_unlearning(ReconMethod.FT, cohort["original"], cohort["loaders"]["retain"], None,
                                        settings)
    assert seconds > 0 and model is not cohort["original"]
    lines = [r.getMessage() for r in caplog.records if r.name == "harmonize.progress"]
    assert len(lines) == 1 and lines[0].startswith("ft: epoch 1/1, loss ")


def test_prepare_batch_keys_passes_extra_inputs() -> None:
    batch = {"a": torch.ones(2, 3), "b": torch.zeros(2, 1), Keys.TARGET: torch.ones(2, 1)}
    inputs, target, args, kwargs = PrepareBatchKeys(("a", "b"))(batch, "cpu")
    assert inputs.shape == (2, 3) and args[0].shape == (2, 1) and kwargs == {} and target.shape == (2, 1)
    with pytest.raises(ConfigError, match=r"The batch lacks key\(s\) \['c'\]"):
        PrepareBatchKeys(("c",))(batch)
    with pytest.raises(ConfigError, match="at least one input key"):
        PrepareBatchKeys(())


def test_bad_methods_and_settings(cohort: dict) -> None:
    loaders, settings = cohort["loaders"], cohort["settings"]
    with pytest.raises(ConfigError, match="'original' is not an unlearning method"):
        run_unlearning(ReconMethod.ORIGINAL, cohort["original"], loaders["retain"], loaders["forget"], settings)
    with pytest.raises(ConfigError, match="Method nl_ft needs retain_loader for its ft stage"):
        run_unlearning(ReconMethod.NL_FT, cohort["original"], None, loaders["forget"], settings)
    with pytest.raises(ConfigError, match="Method ga needs forget_loader for its ga stage"):
        run_unlearning(ReconMethod.GA, cohort["original"], loaders["retain"], None, settings)
    with pytest.raises(ConfigError) as err:  # checked on construction, every problem at once
        MachineUnlearningSettings(ft_epochs=0, learning_rate=-1)
    assert err.value.problems == ["'ft_epochs' must be an integer >= 1, got 0 (int)",
                                  "'learning_rate' must be a finite number > 0, got -1 (int)"]
    with pytest.raises(ConfigError) as err:  # the stage's loss settings too, before any handler is built
        MachineUnlearningSettings(ga_learning_rate=0, noise_std=-0.1, loss_ceiling="high", noise_mode="salt")
    assert err.value.problems[:3] == ["'ga_learning_rate' must be a finite number > 0 or None, got 0 (int)",
                                      "'noise_std' must be a finite number > 0, got -0.1 (float)",
                                      "'loss_ceiling' must be a finite number > 0 or None, got 'high' (str)"]
    assert err.value.problems[3].startswith("Argument 'noise_mode'")


def test_method_iterations_count_each_stage_over_its_loader(cohort: dict) -> None:
    loaders, settings = cohort["loaders"], cohort["settings"]
    retain, forget = loaders["retain"], loaders["forget"]  # 4 and 2 batches
    counts = {m: method_iterations(m, retain, forget, settings) for m in METHOD_STAGES}
    assert counts == {"ft": 40, "ga": 6, "ga_l1": 6, "ga_l1_ft": 46, "nl": 10, "nl_ft": 50, "oracle": 160}
    assert method_iterations("ga", None, forget, settings) == 6  # an unused loader may be None
    with pytest.raises(ConfigError, match="Method nl_ft needs retain_loader for its ft stage"):
        method_iterations(ReconMethod.NL_FT, None, forget, settings)
    with pytest.raises(ConfigError, match="'retrain_subset' is not an unlearning method"):
        method_iterations(ReconMethod.RETRAIN_SUBSET, retain, forget, settings)
