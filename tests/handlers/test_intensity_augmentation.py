"""RandomIntensityAugmentation: what each change does, the normalisation kept, draws fixed by (seed, iteration)."""

from __future__ import annotations

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.handlers import RandomIntensityAugmentation
from harmonize.handlers.intensity_augmentation import IntensityParameters, intensity_jitter


def _params(batch: int, terms: int, log_gamma=0.0, bias=0.0, blur=0.0, noise=0.0) -> IntensityParameters:
    return IntensityParameters(
        torch.full((batch,), float(log_gamma)),
        torch.full((batch, terms), float(bias)),
        torch.full((batch,), float(blur)),
        torch.full((batch,), float(noise)),
        noise_seed=0,
    )


@pytest.fixture
def scans() -> torch.Tensor:
    """Two z-normalised 3-D scans of a bright cube on a background of 0."""
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(2, 1, 12, 12, 12)
    images[:, :, 2:10, 2:10, 2:10] = torch.rand(2, 1, 8, 8, 8, generator=generator) + 1
    inside = images != 0
    for i in range(2):
        values = images[i][inside[i]]
        images[i][inside[i]] = (values - values.mean()) / values.std(unbiased=False)
    return images


def test_no_change_returns_the_scan(scans):
    out = intensity_jitter(scans, _params(2, 19), order=3)  # degree 3 in 3-D: 19 terms
    assert torch.allclose(out, scans, atol=1e-4)


@pytest.mark.parametrize("change", [{"log_gamma": 0.4}, {"bias": 0.3}, {"blur": 1.0}, {"noise": 0.1}])
def test_each_change_keeps_background_and_normalisation(scans, change):
    out = intensity_jitter(scans, _params(2, 19, **change), order=3)
    inside = scans != 0
    assert torch.equal(out[~inside], torch.zeros_like(out[~inside]))
    for i in range(2):
        values = out[i][inside[i]]
        assert abs(float(values.mean())) < 1e-4 and abs(float(values.std(unbiased=False)) - 1) < 1e-3
    assert not torch.allclose(out, scans, atol=1e-2)


def test_gamma_keeps_the_order_of_intensities(scans):
    out = intensity_jitter(scans, _params(2, 19, log_gamma=0.4), order=3)
    inside = scans[0] != 0
    assert torch.equal(scans[0][inside].argsort(), out[0][inside].argsort())


def test_blur_lowers_the_differences_between_neighbours(scans):
    out = intensity_jitter(scans, _params(2, 19, blur=1.0), order=3)
    core = (slice(None), slice(None), slice(3, 9), slice(3, 9), slice(3, 9))
    assert out[core].diff(dim=2).abs().mean() < 0.7 * scans[core].diff(dim=2).abs().mean()


def test_a_two_dimensional_batch_works():
    image = torch.zeros(3, 1, 10, 10)
    image[:, :, 2:8, 2:8] = torch.linspace(-1, 1, 36).reshape(6, 6)
    params = RandomIntensityAugmentation(seed=0).sample(3, 2, iteration=1)
    out = intensity_jitter(image, params, order=3)
    assert out.shape == image.shape and torch.equal(out[image == 0], torch.zeros_like(out[image == 0]))


def test_draws_are_a_function_of_seed_and_iteration():
    one, two = RandomIntensityAugmentation(seed=3), RandomIntensityAugmentation(seed=3)
    a, b = one.sample(4, 3, iteration=7), two.sample(4, 3, iteration=7)
    assert torch.equal(a.bias, b.bias) and torch.equal(a.log_gamma, b.log_gamma) and a.noise_seed == b.noise_seed
    assert not torch.equal(a.bias, one.sample(4, 3, iteration=8).bias)
    assert not torch.equal(a.bias, RandomIntensityAugmentation(seed=4).sample(4, 3, iteration=7).bias)


def test_draws_stay_in_their_ranges():
    augmentation = RandomIntensityAugmentation(max_log_gamma=0.2, max_bias=0.1, bias_order=2, max_blur=0.5, max_noise=0.05)
    params = augmentation.sample(256, 3, 1)
    assert params.bias.shape == (256, 9)  # degree <= 2 in 3-D, without the constant
    assert params.log_gamma.abs().max() <= 0.2 and params.bias.abs().max() <= 0.1
    assert 0 <= params.blur.min() and params.blur.max() <= 0.5 and 0 <= params.noise.min() and params.noise.max() <= 0.05


def test_attached_to_an_engine_it_changes_copies_of_the_batches(scans):
    from ignite.engine import Engine

    seen = []
    engine = Engine(lambda e, batch: seen.append(batch["image"].clone()))
    augmentation = RandomIntensityAugmentation(seed=1)
    augmentation.attach(engine)
    batches = [{"image": scans.clone()} for _ in range(3)]
    engine.run(batches, max_epochs=1)
    assert all(torch.equal(b["image"], scans) for b in batches)  # the loader's batches are not written to
    for iteration, image in enumerate(seen, start=1):
        expected = intensity_jitter(scans, augmentation.sample(2, 3, iteration), order=3)
        assert torch.equal(image, expected)


def test_an_evaluator_is_refused():
    from monai.engines import SupervisedEvaluator

    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=torch.nn.Identity())
    with pytest.raises(ConfigError, match="evaluator|optimizer"):
        RandomIntensityAugmentation().attach(evaluator)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_log_gamma": -1}, "max_log_gamma"),
        ({"max_noise": float("nan")}, "max_noise"),
        ({"bias_order": 0}, "bias_order"),
        ({"image_keys": ()}, "image_keys"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RandomIntensityAugmentation(**kwargs)


def test_bad_batches_are_named():
    from types import SimpleNamespace

    augmentation = RandomIntensityAugmentation()
    engine = SimpleNamespace(state=SimpleNamespace(batch={"age": torch.zeros(2)}, iteration=1))
    with pytest.raises(KeyError, match="image"):
        augmentation(engine)
    engine.state.batch = {"image": torch.zeros(2, 4)}
    with pytest.raises(ConfigError, match="shape"):
        augmentation(engine)
