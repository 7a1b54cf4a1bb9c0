"""RandomRigidAugmentation: exact geometry of the warp, draws fixed by (seed, iteration), use on a trainer."""

from __future__ import annotations

import math

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.handlers import RandomRigidAugmentation
from harmonize.handlers.rigid_augmentation import RigidParameters, rigid_warp


def _params(batch: int, dims: int, flips=None, angles=None, shifts=None) -> RigidParameters:
    return RigidParameters(
        torch.zeros(batch, dims, dtype=torch.bool) if flips is None else torch.tensor(flips),
        torch.zeros(batch, 3 if dims == 3 else 1) if angles is None else torch.tensor(angles, dtype=torch.float32),
        torch.zeros(batch, dims) if shifts is None else torch.tensor(shifts, dtype=torch.float32),
    )


@pytest.fixture
def volumes() -> torch.Tensor:
    return torch.arange(2 * 6 * 8 * 5, dtype=torch.float32).reshape(2, 1, 6, 8, 5)


def test_identity_parameters_leave_the_batch_unchanged(volumes):
    assert torch.allclose(rigid_warp(volumes, _params(2, 3)), volumes, atol=1e-4)


def test_flip_mirrors_only_the_chosen_samples_and_axes(volumes):
    out = rigid_warp(volumes, _params(2, 3, flips=[[True, False, False], [False, False, True]]))
    assert torch.allclose(out[0], volumes[0].flip(1), atol=1e-4)
    assert torch.allclose(out[1], volumes[1].flip(3), atol=1e-4)


def test_whole_voxel_shift_moves_the_content(volumes):
    out = rigid_warp(volumes, _params(2, 3, shifts=[[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]]), mode="nearest")
    assert torch.equal(out[0, 0, :-1], volumes[0, 0, 1:])
    assert torch.equal(out[1, 0, :, 2:], volumes[1, 0, :, :-2])
    assert torch.equal(out[0, 0, -1], torch.zeros_like(out[0, 0, -1]))  # outside the image: background


def test_quarter_turn_of_a_square_image_is_rot90():
    image = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    out = rigid_warp(image, _params(1, 2, angles=[[math.pi / 2]]), mode="nearest")
    assert torch.equal(out[0, 0], torch.rot90(image[0, 0], -1))


def test_rotation_on_an_anisotropic_grid_does_not_shear():
    box = torch.zeros(1, 1, 9, 15, 5)
    box[0, 0, 3:6, 5:10, :] = 1  # 3 x 5 voxels in the first two axes
    out = rigid_warp(box, _params(1, 3, angles=[[0.0, 0.0, math.pi / 2]]), mode="nearest")
    inside = out[0, 0, :, :, 2].nonzero()
    extent = (inside.max(0).values - inside.min(0).values + 1).tolist()
    assert extent == [5, 3]  # the box turned, it did not stretch
    assert out.sum() == box.sum()


def test_draws_are_a_function_of_seed_and_iteration():
    one, two = RandomRigidAugmentation(seed=3), RandomRigidAugmentation(seed=3)
    a, b = one.sample(4, 3, iteration=7), two.sample(4, 3, iteration=7)
    assert torch.equal(a.angles, b.angles) and torch.equal(a.shifts, b.shifts) and torch.equal(a.flips, b.flips)
    assert not torch.equal(a.angles, one.sample(4, 3, iteration=8).angles)
    assert not torch.equal(a.angles, RandomRigidAugmentation(seed=4).sample(4, 3, iteration=7).angles)


def test_draws_stay_in_their_ranges_and_flip_only_the_flip_axes():
    params = RandomRigidAugmentation(max_rotation_deg=10, max_shift_voxels=1.5, flip_axes=(0,)).sample(256, 3, 1)
    assert params.angles.abs().max() <= math.radians(10) and params.shifts.abs().max() <= 1.5
    assert not params.flips[:, 1:].any()
    assert 0.3 < params.flips[:, 0].float().mean() < 0.7


def test_attached_to_an_engine_it_moves_image_and_label_together():
    from ignite.engine import Engine

    image = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4, 4)
    seen = []
    engine = Engine(lambda e, batch: seen.append({k: v.clone() for k, v in batch.items()}))
    augmentation = RandomRigidAugmentation(label_keys=("label",), max_rotation_deg=0, max_shift_voxels=0, seed=1)
    augmentation.attach(engine)
    batches = [{"image": image, "label": image.clone()} for _ in range(4)]
    engine.run(batches, max_epochs=1)
    assert all(torch.equal(b["image"], image) for b in batches)  # the loader's batches are not written to
    flipped = [augmentation.sample(2, 3, i).flips[:, 0] for i in range(1, 5)]
    assert any(f.any() for f in flipped)
    for batch, flips in zip(seen, flipped):
        assert torch.equal(batch["image"], batch["label"])
        for sample, mirrored in enumerate(flips):
            expected = image[sample].flip(1) if mirrored else image[sample]
            assert torch.allclose(batch["image"][sample], expected, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_rotation_deg": -1}, "max_rotation_deg"),
        ({"max_shift_voxels": float("nan")}, "max_shift_voxels"),
        ({"image_keys": ()}, "image_keys"),
    ],
)
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RandomRigidAugmentation(**kwargs)


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        RandomRigidAugmentation(image_keys=(), max_rotation_deg=-1, max_shift_voxels="2")
    assert err.value.problems == ["'max_rotation_deg' must be a finite number >= 0, got -1 (int)",
                                  "'max_shift_voxels' must be a finite number >= 0, got '2' (str)",
                                  "'image_keys' is empty; name at least one batch key to augment"]


def test_bad_batches_are_named():
    from types import SimpleNamespace

    augmentation = RandomRigidAugmentation(flip_axes=(2,))
    engine = SimpleNamespace(state=SimpleNamespace(batch={"age": torch.zeros(2)}, iteration=1))
    with pytest.raises(KeyError, match="image"):
        augmentation(engine)
    engine.state.batch = {"image": torch.zeros(2, 1, 4, 4)}
    with pytest.raises(ConfigError, match="flip_axes"):
        augmentation(engine)
    engine.state.batch = {"image": torch.zeros(2, 4)}
    with pytest.raises(ConfigError, match="shape"):
        augmentation(engine)
