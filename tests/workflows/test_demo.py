"""DemoSettings: checked on construction, with the problems of every part it builds listed at once."""

from __future__ import annotations

import pytest

from harmonize.errors import ConfigError
from harmonize.workflows.demo import DemoSettings


def test_every_bad_setting_is_named_at_once_with_its_part():
    with pytest.raises(ConfigError) as err:
        DemoSettings(sites=1, held_out_fraction=1.5, preprocess_spacing=0, max_epochs=0, seeds=0, channels=(8, 0),
                     beta=-1, biased_skip=("dann", "danm"))
    assert err.value.message == "DemoSettings: invalid arguments."
    assert err.value.problems[0].startswith("Argument 'biased_skip': By 'danm', did you mean 'dann'?")
    assert err.value.problems[1:] == [
        "the unlearning run: 'beta' must be a finite number >= 0, got -1 (int)",
        "the training: 'max_epochs' must be an integer >= 1, got 0 (int)",
        "the training: 'channels' must be a sequence of 1 or more integers >= 1, got (8, 0) (tuple)",
        "the comparison: 'seeds' must be an integer >= 1, got 0 (int): the number of seeds each method trains on",
        "the cohort: 'n_sites' must be an integer >= 2 and <= 64, got 1 (int)",
        "the cohort: 'val_fraction' + 'test_fraction' must be < 1 to leave some training subjects, got 0.5625 + "
        "0.9375",
        "the preprocessing: 'target_spacing' must be one finite number > 0 or a sequence of 3 of them, got 0 (int)",
    ]


def test_the_parts_are_built_from_the_settings():
    settings = DemoSettings.quick()
    compare = settings.compare_settings()
    assert compare.training.max_epochs == 3 and compare.training.unlearning.warmup_epochs == 1
    assert settings.synth_config(biased=True).biased and settings.synth_config(biased=False).n_sites == 3
    assert settings.preprocess_config().target_shape == (32, 32, 32)
