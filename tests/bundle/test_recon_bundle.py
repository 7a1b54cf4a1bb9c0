"""End to end: the reconstruction-unlearning bundle's configs, run in-process with ``monai.bundle`` at tiny size.

train.json -> oracle.json -> unlearn.json (ga_l1_ft) -> evaluate.json, from ``bundles/recon_unlearning``, with
outputs under a temporary ``bundle_root``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow, run
from monai.data import DataLoader
from torch.utils.data import ConcatDataset

from harmonize.bundle import check_overrides, verify_bundle_metadata
from harmonize.errors import ConfigError
from harmonize.handlers import MachineUnlearningHandler
from harmonize.keys import Keys
from harmonize.metrics.reconstruction import TABLE_COLUMNS
from harmonize.networks import ReconUNet
from harmonize.workflows.machine_unlearning import train_stage
from harmonize.workflows.recon_unlearning import (
    ReconUnlearningSettings,
    build_splits,
    stage_settings,
)

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "recon_unlearning"
CONFIGS = BUNDLE / "configs"
#: Tiny data and network: 12 retain and 4 forget training slices of 32 x 32.
TINY = {
    "device": "cpu",
    "max_epochs": 2,
    "batch_size": 4,
    "scenario#data#size": 32,
    "scenario#data#slices_per_volume": 2,
    "scenario#data#retain_train_volumes": 6,
    "scenario#data#forget_train_volumes": 2,
    "scenario#data#retain_test_volumes": 2,
    "scenario#data#forget_test_volumes": 2,
    "network_def#channels": [8, 16, 32],
    "network_def#strides": [2, 2],
}
UNLEARN = {"method": "ga_l1_ft", "forget_epochs": 2, "retain_fraction": 0.5, "max_epochs": 1}
#: The ids the docs name as overridable.
DOCUMENTED_IDS = ("bundle_root", "output_dir", "max_epochs", "device", "method", "retain_fraction", "lr", "noise",
                  "l1_penalty", "manifest", "forget_site", "forget_epochs", "seed")


def files(*names: str) -> list[str]:
    return [str(CONFIGS / name) for name in names]


def run_config(root: Path, *names: str, logging_file: str | bool = False, **overrides) -> None:
    run(config_file=files(*names), meta_file=str(CONFIGS / "metadata.json"), logging_file=logging_file,
        bundle_root=str(root), **{**TINY, **overrides})


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def restore_logging():
    """The bundle's logging.conf replaces the root logger's handlers: put them back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("recon_bundle")
    run_config(root, "train.json")
    original = digest(root / "models" / "model.pt")
    run_config(root, "train.json", "oracle.json")
    run_config(root, "train.json", "unlearn.json", **UNLEARN)
    return {"root": root, "models": root / "models", "original_digest": original}


def test_train_gives_the_workflow_s_original_model(bundle: dict) -> None:
    """The config reproduces the workflow's original exactly: same data, initialisation, loader, loss, optimiser."""
    settings = ReconUnlearningSettings(
        data={"size": 32, "slices_per_volume": 2, "retain_train_volumes": 6, "forget_train_volumes": 2,
              "retain_test_volumes": 2, "forget_test_volumes": 2}, batch_size=4, original_epochs=2,
    )
    splits = build_splits(settings)
    torch.manual_seed(settings.seed)
    net = ReconUNet(channels=(8, 16, 32), strides=(2, 2))
    loader = DataLoader(ConcatDataset([splits.retain_train, splits.forget_train]), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(settings.seed))
    train_stage(net, loader, settings.original_epochs, stage_settings(settings))
    saved = torch.load(bundle["models"] / "model.pt", weights_only=True)
    assert set(saved) == set(net.state_dict())
    for name, value in net.state_dict().items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0)
    record = json.loads((bundle["models"] / "model.json").read_text())
    assert record["method"] == "original" and record["stages"][0]["stage"] == "train"
    assert record["stages"][0]["iterations"] == 2 * 4  # 16 slices in batches of 4, 2 epochs
    assert record["sizes"] == {"retain_train": 12, "forget_train": 4, "retain_test": 4, "forget_test": 4}


def test_oracle_never_sees_forget_data(bundle: dict) -> None:
    record = json.loads((bundle["models"] / "model_oracle.json").read_text())
    (stage,) = record["stages"]
    assert stage["stage"] == "ft" and stage["num_seen"] == {"forget": 0, "retain": 2 * 12}
    assert stage["num_dropped"] == 0 and record["seconds"] > 0


def test_unlearn_starts_from_the_original_and_leaves_it_untouched(bundle: dict) -> None:
    models = bundle["models"]
    assert digest(models / "model.pt") == bundle["original_digest"]
    original = torch.load(models / "model.pt", weights_only=True)
    unlearned = torch.load(models / "model_ga_l1_ft.pt", weights_only=True)
    assert any(not torch.equal(original[k], unlearned[k]) for k in original)
    record = json.loads((models / "model_ga_l1_ft.json").read_text())
    ga, ft = record["stages"]
    # 4 forget + 6 retain slices (forget_with_retain), batches of 4: 3 iterations per epoch
    assert (ga["stage"], ga["epochs"], ga["iterations"]) == ("ga_l1", 2, 6)
    assert ga["num_seen"] == {"forget": 2 * 4, "retain": 2 * 6}
    assert (ft["stage"], ft["epochs"]) == ("ft", 1)
    assert ft["num_seen"] == {"forget": 0, "retain": 6} and record["retain_slices"] == 6  # half of 12 retain
    assert record["seconds"] == pytest.approx(ga["seconds"] + ft["seconds"])
    assert record["l1_penalty"] == 1e-05 and record["noise"] == 1.0 and record["retain_fraction"] == 0.5


def test_evaluate_writes_the_table(bundle: dict, restore_logging) -> None:
    root = bundle["root"]
    run_config(root, "train.json", "evaluate.json", logging_file=str(CONFIGS / "logging.conf"))
    payload = json.loads((root / "eval" / "recon_unlearning.json").read_text())
    assert payload["columns"] == list(TABLE_COLUMNS)
    assert [r["method"] for r in payload["table"]] == ["original", "oracle", "ga_l1_ft"]
    for row in payload["table"]:
        assert row["seconds"] == payload["runs"][row["method"]]["seconds"] > 0
        assert all(5 < row[f"{s}_psnr"] < 60 and -1 <= row[f"{s}_ssim"] <= 1 for s in ("bta", "kta", "ua"))
    markdown = (root / "eval" / "recon_unlearning.md").read_text()
    assert "| method | BTA PSNR | BTA SSIM | KTA PSNR |" in markdown and "| ga_l1_ft |" in markdown


def workflow(root: Path, *names: str, **overrides) -> ConfigWorkflow:
    flow = ConfigWorkflow(config_file=files(*names), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
                          workflow_type=None, bundle_root=str(root), **{**TINY, **overrides})
    flow.initialize()
    return flow


@pytest.mark.parametrize(
    ("method", "forget", "finetune", "lr"),
    [("ft", None, True, None), ("ga", "ga", False, 0.5), ("ga_l1", "ga_l1", False, 0.5),
     ("ga_l1_ft", "ga_l1", True, 0.5), ("nl", "nl", False, 1e-3), ("nl_ft", "nl", True, 1e-3)],
)
def test_method_selects_the_stages(bundle: dict, method: str, forget: str | None, finetune: bool,
                                   lr: float | None) -> None:
    flow = workflow(bundle["root"], "train.json", "unlearn.json", method=method, ga_lr=0.5, noise=0.3,
                    l1_penalty=0.01)
    handler = flow.parser.get_parsed_content("unlearn#forget#handler")
    trainer = flow.parser.get_parsed_content("unlearn#forget#trainer")
    if forget is None:
        assert handler is None and trainer is None
    else:
        assert isinstance(handler, MachineUnlearningHandler) and handler.method == forget
        assert handler.noise_std == 0.3 and handler.l1_penalty == 0.01 and handler.loss_ceiling == 0.9
        assert handler.retain_weight == 1.0
        assert trainer.optimizer.param_groups[0]["lr"] == lr and trainer.state.max_epochs == 3
        # the two-stage methods' forget stage also sees the retain subset (forget_with_retain)
        forget_slices = len(flow.parser.get_parsed_content("unlearn#forget_loader").dataset)
        retain_slices = len(flow.parser.get_parsed_content("unlearn#retain_dataset"))
        assert forget_slices == 4 + (retain_slices if finetune else 0)
    retain = flow.parser.get_parsed_content("unlearn#retain#trainer")
    assert (retain is not None) == finetune
    assert flow.parser.get_parsed_content("save_name") == f"model_{method}.pt"


def test_manifest_defines_the_forget_site(tiny_cohort: Path) -> None:
    flow = workflow(Path("unused"), "train.json", manifest=str(tiny_cohort), forget_site="site1")
    splits = flow.parser.get_parsed_content("splits")
    assert {s[Keys.SITE] for s in splits.forget_train} == {"site1"}
    assert "site1" not in {s[Keys.SITE] for s in splits.retain_train}
    assert all(bool(s[Keys.FORGET]) for s in splits.forget_test)


def test_user_mistakes_are_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        run_config(tmp_path, "train.json", "unlearn.json", method="ga_l1_ft")
    assert isinstance(err.value.__cause__, ConfigError)
    assert "Train the original model first: python -m monai.bundle run --config_file configs/train.json" in str(
        err.value.__cause__)
    with pytest.raises(RuntimeError) as err:
        workflow(tmp_path, "train.json", "unlearn.json", method="oracle").parser.get_parsed_content("unlearn#finetune")
    assert "Bundle id 'method': 'oracle' is not one of" in str(err.value.__cause__)
    with pytest.raises(RuntimeError) as err:
        workflow(tmp_path, "train.json", "unlearn.json", retain_fraction=1.5)
    assert "'retain_fraction' must be a finite number > 0 and <= 1, got 1.5 (float)" in str(err.value.__cause__)
    with pytest.raises(RuntimeError) as err:
        run_config(tmp_path, "train.json", "evaluate.json")
    assert "No checkpoint for ['original'" in str(err.value.__cause__)


def test_documented_ids_exist_and_metadata_verifies_offline() -> None:
    for names in (("train.json",), ("train.json", "oracle.json"), ("train.json", "unlearn.json"),
                  ("train.json", "evaluate.json")):
        known = {k: None for k in DOCUMENTED_IDS if names[-1] == "unlearn.json" or k not in
                 ("method", "retain_fraction", "noise", "l1_penalty", "forget_epochs")}
        check_overrides(files(*names), {**TINY, **known})
    with pytest.raises(ConfigError, match="'retain_fractoin': did you mean 'retain_fraction'"):
        check_overrides(files("train.json", "unlearn.json"), {"retain_fractoin": 0.2})
    verify_bundle_metadata(BUNDLE)
    for name in ("LICENSE", "docs/README.md", "configs/logging.conf"):
        assert (BUNDLE / name).is_file()


@pytest.mark.parametrize("kind", ["eval", "infer"])
def test_monai_property_check_passes_for_evaluate(tmp_path: Path, kind: str) -> None:
    """evaluate.json (over train.json) is a SupervisedEvaluator with the standard evaluation ids."""
    flow = ConfigWorkflow(config_file=files("train.json", "evaluate.json"), meta_file=str(CONFIGS / "metadata.json"),
                          workflow_type=kind, logging_file=False, bundle_root=str(tmp_path), **TINY)
    flow.initialize()
    assert flow.check_properties() == []
    assert flow.dataset_dir == "" and type(flow.inferer).__name__ == "SimpleInferer"
    assert type(flow.evaluator).__name__ == "SupervisedEvaluator"
    assert flow.evaluator.network is flow.parser.get_parsed_content("network")
    # retain-test (4 slices), forget-test (4) and forget-train (4), each sample tagged with its set
    assert len(flow.dataset) == 12
    assert [flow.dataset[i][Keys.EVAL_SET] for i in (0, 4, 8)] == ["bta", "kta", "ua"]


def test_monai_property_check_passes_for_train(tmp_path: Path) -> None:
    """The Model Zoo's standard train ids (bundle_root, device, dataset_dir, trainer, train_dataset, ...)."""
    flow = ConfigWorkflow(config_file=files("train.json"), meta_file=str(CONFIGS / "metadata.json"),
                          workflow_type="train", logging_file=False, bundle_root=str(tmp_path), **TINY)
    flow.initialize()
    assert flow.check_properties() == []
    assert flow.dataset_dir == "" and type(flow.train_inferer).__name__ == "SimpleInferer"
