"""Memory planned before large allocations: a resampled volume, a network's training step; refused with the GiB."""

from __future__ import annotations

import pytest

from harmonize import defaults, memory
from harmonize.errors import ConfigError, HarmonizeError, ResourceError
from harmonize.networks import BrainAgeRegressor


def test_the_limit_comes_from_the_environment_when_set(monkeypatch):
    monkeypatch.setenv(defaults.MEMORY_LIMIT_ENV, "2")
    assert memory.available_memory() == (2 * 2**30, f"the limit {defaults.MEMORY_LIMIT_ENV}=2")
    monkeypatch.setenv(defaults.MEMORY_LIMIT_ENV, "-1")
    with pytest.raises(ConfigError, match=f"{defaults.MEMORY_LIMIT_ENV}='-1' must be a positive number of GiB"):
        memory.available_memory()
    monkeypatch.delenv(defaults.MEMORY_LIMIT_ENV)
    available, source = memory.available_memory()
    assert available is None or (available > 0 and source == "available memory")


def test_an_allocation_beyond_the_limit_is_refused_with_the_numbers(monkeypatch):
    monkeypatch.setenv(defaults.MEMORY_LIMIT_ENV, "1")
    memory.check_memory(0.8 * 2**30, "fits", "n/a")
    with pytest.raises(ResourceError, match=r"^Resampling needs about 3.0 GiB of memory, more than this machine can "
                                            r"give \(1.0 GiB, the limit .*\). To ask for less, use a coarser spacing\.$"):
        memory.check_memory(3 * 2**30, "Resampling", "use a coarser spacing")


def test_estimates():
    # 100^3 voxels of 1 mm to 0.2 mm: 500^3 float32 voxels, three copies
    assert memory.resample_bytes((100, 100, 100), (1.0, 1.0, 1.0), 0.2) == 500**3 * 4 * 3
    small = memory.training_bytes(lambda: BrainAgeRegressor(channels=(4, 4), feature_dim=8), (2, 1, 16, 16, 16))
    wide = memory.training_bytes(lambda: BrainAgeRegressor(channels=(64, 64), feature_dim=8), (2, 1, 16, 16, 16))
    assert 2 * 4 * 16**3 * 4 * 2 < small < wide  # at least the first convolution's output, kept with its gradient
    with pytest.raises(ValueError, match="every spatial axis must be >= 8 voxels"):
        memory.training_bytes(lambda: BrainAgeRegressor(channels=(4, 4, 4, 4)), (2, 1, 4, 4, 4))


def test_preprocessing_to_a_fine_spacing_is_refused_per_scan(tiny_cohort, tmp_path, monkeypatch):
    """`preprocess --spacing 0.2` of 24^3 scans of 8.3 mm: about 1,000^3 voxels each, beyond a 1 GiB limit."""
    from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest

    monkeypatch.setenv(defaults.MEMORY_LIMIT_ENV, "1")
    with pytest.raises(HarmonizeError) as info:
        preprocess_manifest(tiny_cohort, tmp_path / "out", PreprocessConfig(target_spacing=0.2), progress=False)
    assert "18 scan(s) of" in info.value.message
    first = info.value.problems[0]
    assert first.startswith("row 2 (subject 'site0-sub000'): ") and "site0-sub000.nii.gz: resampling" in first and "to (0.2, 0.2, 0.2) mm voxels needs about" in first
    assert "To ask for less, choose a coarser --spacing (target_spacing)." in first


def test_training_a_network_too_large_for_the_memory_is_refused(tiny_cohort, monkeypatch):
    from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
    from harmonize.workflows.unlearning import UnlearningSettings

    monkeypatch.setenv(defaults.MEMORY_LIMIT_ENV, "0.01")
    settings = BrainAgeSettings(unlearning=UnlearningSettings(method="none"), channels=(256, 256), max_epochs=1,
                                batch_size=6, cache=False)
    with pytest.raises(ResourceError, match=r"Training the brain-age network \(channels 256,256\) on batches of 6 scans "
                                            r"of \(24, 24, 24\) voxels needs about [\d.]+ GiB of memory"):
        train_brain_age(tiny_cohort, settings)
