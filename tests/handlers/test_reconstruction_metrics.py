"""ReconstructionMetricsHandler: per-volume PSNR / SSIM of each evaluation set, from one evaluator run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer
from torch import nn

from harmonize.errors import ConfigError
from harmonize.handlers import ReconstructionMetricsHandler
from harmonize.keys import Keys
from harmonize.metrics.reconstruction import mean_metrics, volume_metrics
from harmonize.workflows.machine_unlearning import PrepareBatchKeys

SETS = ("bta", "kta", "ua")


class Shift(nn.Module):
    """A 'reconstruction' that adds a constant: worse than its input by a known amount."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.1


def samples(seed: int = 0) -> list[dict]:
    """12 slices of 8 x 8: 2 volumes of 2 slices in each set; the input is the target plus noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name in SETS:
        for volume in range(2):
            for _ in range(2):
                target = torch.rand(1, 8, 8, generator=g)
                out.append({Keys.IMAGE: target + 0.05 * torch.randn(1, 8, 8, generator=g), Keys.TARGET: target,
                            Keys.VOLUME_ID: f"{name}{volume}", Keys.EVAL_SET: name})
    return out


def evaluate(data: list[dict], handler: ReconstructionMetricsHandler, decollate: bool = False) -> dict:
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=DataLoader(data, batch_size=5, shuffle=False), network=Shift(),
        prepare_batch=PrepareBatchKeys((Keys.IMAGE,), Keys.TARGET), inferer=SimpleInferer(),
        val_handlers=[handler], decollate=decollate)
    evaluator.run()
    return dict(evaluator.state.metrics)


def expected(data: list[dict], name: str, floor: bool) -> dict[str, float]:
    rows = [d for d in data if d[Keys.EVAL_SET] == name]
    pred = torch.stack([d[Keys.IMAGE] if floor else d[Keys.IMAGE] + 0.1 for d in rows])
    target = torch.stack([d[Keys.TARGET] for d in rows])
    return mean_metrics(volume_metrics(pred, target, [d[Keys.VOLUME_ID] for d in rows]))


def test_each_set_and_the_floor_are_scored_per_volume():
    data = samples()
    metrics = evaluate(data, ReconstructionMetricsHandler())
    for name in SETS:
        for floor, prefix in ((False, ""), (True, "zero_filled_")):
            scores = expected(data, name, floor)
            assert metrics[f"{prefix}{name}_psnr"] == pytest.approx(scores["psnr"], rel=1e-6)
            assert metrics[f"{prefix}{name}_ssim"] == pytest.approx(scores["ssim"], rel=1e-6)
        assert metrics[f"{name}_psnr"] < metrics[f"zero_filled_{name}_psnr"]  # the +0.1 shift is worse than noise
    again = evaluate(data[:4], ReconstructionMetricsHandler(floor_key=None))  # a second run starts afresh
    assert set(again) == {"bta_psnr", "bta_ssim"}


def test_shards_of_several_processes_are_gathered_before_scoring(monkeypatch):
    """Under torch.distributed each process holds a shard; a volume split across shards is scored whole."""
    data = samples()
    whole = evaluate(data, ReconstructionMetricsHandler())
    first, second = ReconstructionMetricsHandler(), ReconstructionMetricsHandler()
    evaluate(data[::2], first)  # this process's shard (even slices: every volume is split across the shards)
    evaluate(data[1::2], second)  # the other process's
    other = second._gathered()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)

    def all_gather_object(out: list, local: object) -> None:
        out[:] = [local, other]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    engine = SimpleNamespace(state=SimpleNamespace(metrics={}))
    first.compute(engine)  # what the end of this process's run does, distributed
    assert engine.state.metrics == pytest.approx(whole, rel=1e-6)


def test_a_decollated_output_or_a_batch_without_its_keys_is_refused():
    with pytest.raises(ConfigError, match="build the SupervisedEvaluator with decollate=False"):
        evaluate(samples(), ReconstructionMetricsHandler(), decollate=True)
    with pytest.raises(ConfigError, match=r"the batch lacks key\(s\) \['eval_set'\]"):
        evaluate([{k: v for k, v in d.items() if k != Keys.EVAL_SET} for d in samples()],
                 ReconstructionMetricsHandler())
