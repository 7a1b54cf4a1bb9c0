"""Tests of harmonize.data.preprocess.config: the settings are checked, the summary reads right."""

from __future__ import annotations

import pytest

from harmonize.data.preprocess import PreprocessConfig
from harmonize.errors import ConfigError

from .conftest import CONFIG


def test_config_is_checked():
    assert CONFIG.target_spacing == (1.5, 1.5, 1.5) and CONFIG.mask_method == "otsu"
    with pytest.raises(ConfigError) as err:
        PreprocessConfig(target_spacing=-1, target_shape=(16, 16), landmarks_cutoff=(0.9, 0.1))
    assert len(err.value.problems) == 3
    assert "target_spacing must be one positive number or three, not -1" in err.value.problems
    with pytest.raises(ConfigError, match="Argument 'mask_method'"):
        PreprocessConfig(mask_method="otsuu")


# --- issue 17: outliers, self-checked outputs, a scan listed twice, a full disk ---------------------------------
