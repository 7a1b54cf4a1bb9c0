"""Tests of per-volume PSNR / SSIM and the unlearning table."""

from __future__ import annotations

import math

import pytest
import torch

from harmonize.errors import ConfigError
from harmonize.keys import Keys
from harmonize.metrics.reconstruction import (
    TABLE_COLUMNS,
    evaluate_reconstruction,
    mean_metrics,
    unlearning_row,
    unlearning_table,
    volume_metrics,
)


def _samples(n: int, volume: str, offset: float) -> list[dict]:
    g = torch.Generator().manual_seed(n)
    out = []
    for i in range(n):
        target = torch.rand(1, 16, 16, generator=g)
        target[0, 0, 0] = 1.0  # volume peak exactly 1
        out.append({Keys.TARGET: target, Keys.IMAGE: target + offset, Keys.VOLUME_ID: volume})
    return out


def test_identical_images() -> None:
    x = torch.rand(3, 1, 16, 16)
    scores = volume_metrics(x, x.clone(), ["a", "a", "b"])
    assert scores["a"]["ssim"] == pytest.approx(1.0) and scores["b"]["ssim"] == pytest.approx(1.0)
    assert math.isinf(scores["a"]["psnr"])


@pytest.mark.parametrize(("offset", "peak", "expected"), [(0.1, 1.0, 20.0), (0.01, 1.0, 40.0), (0.1, 2.0, 26.0206)])
def test_psnr_formula(offset: float, peak: float, expected: float) -> None:
    target = torch.rand(2, 1, 8, 8) * peak
    target[0, 0, 0, 0] = peak
    scores = volume_metrics(target + offset, target, ["v", "v"])  # MSE = offset^2
    assert scores["v"]["psnr"] == pytest.approx(expected, abs=1e-3)
    fixed = volume_metrics(target + offset, target, ["v", "v"], data_range=1.0)
    assert fixed["v"]["psnr"] == pytest.approx(-20 * math.log10(offset), abs=1e-3)


def test_gaussian_noise_psnr() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 32, 32, generator=g)
    target[0, 0, 0, 0] = 1.0
    noise = 0.05 * torch.randn(target.shape, generator=g)
    psnr = volume_metrics(target + noise, target, ["v"] * 4)["v"]["psnr"]
    assert psnr == pytest.approx(-10 * math.log10(float(noise.pow(2).mean())), abs=1e-3)
    assert psnr == pytest.approx(26.02, abs=0.2)  # 20 log10(1 / 0.05)


def test_slices_are_grouped_by_volume_even_when_interleaved() -> None:
    target = torch.rand(4, 1, 8, 8)
    target[:, 0, 0, 0] = 1.0
    pred = target.clone()
    pred[[0, 2]] += 0.1  # volume a: PSNR 20 dB
    pred[[1, 3]] += 0.01  # volume b: PSNR 40 dB
    scores = volume_metrics(pred, target, ["a", "b", "a", "b"])
    assert scores["a"]["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert scores["b"]["psnr"] == pytest.approx(40.0, abs=1e-3)
    assert scores["b"]["ssim"] > scores["a"]["ssim"]
    assert mean_metrics(scores)["psnr"] == pytest.approx(30.0, abs=1e-3)
    assert math.isnan(mean_metrics({})["psnr"])


def test_shape_and_id_errors() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(2, 1, 8, 8\) and \(1, 1, 8, 8\)"):
        volume_metrics(torch.rand(2, 1, 8, 8), torch.rand(1, 1, 8, 8), ["a"])
    with pytest.raises(ValueError, match="got 1 volume ids for 2 slices"):
        volume_metrics(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), ["a"])


def test_evaluate_and_table() -> None:
    retain, forget, forget_train = _samples(3, "r", 0.1), _samples(2, "f", 0.01), _samples(2, "t", 0.1)
    predictor = lambda batch: batch[Keys.IMAGE]
    scores = evaluate_reconstruction(predictor, retain, batch_size=2)
    assert scores["psnr"] == pytest.approx(20.0, abs=1e-3)
    row = unlearning_row("zf", predictor, retain, forget, forget_train, seconds=1.5)
    assert tuple(row) == TABLE_COLUMNS
    assert row["bta_psnr"] == pytest.approx(20.0, abs=1e-3) and row["kta_psnr"] == pytest.approx(40.0, abs=1e-3)
    assert row["ua_psnr"] == pytest.approx(20.0, abs=1e-3) and row["seconds"] == 1.5
    table = unlearning_table({"a": predictor, "b": predictor}, {"a": 1.0, "b": 2.0}, retain, forget, forget_train)
    assert [r["method"] for r in table] == ["a", "b"] and table[1]["seconds"] == 2.0
    with pytest.raises(ConfigError, match=r"No wall time for method\(s\) \['b'\]"):
        unlearning_table({"a": predictor, "b": predictor}, {"a": 1.0}, retain, forget, forget_train)
    with pytest.raises(ConfigError, match="empty dataset"):
        evaluate_reconstruction(predictor, [])
