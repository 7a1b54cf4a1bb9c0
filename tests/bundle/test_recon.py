"""Tests of the reconstruction bundle's helpers: stage selection, file names, weights, run records, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from monai.engines import SupervisedTrainer

from harmonize.bundle.recon import (
    EVALUATION_ORDER,
    FASTMRI_SUFFIXES,
    UNLEARN_METHODS,
    check_inference_inputs,
    checkpoint_name,
    evaluate_checkpoints,
    forget_stage,
    has_finetune,
    inference_files,
    load_weights,
    method_stages,
    read_run_record,
    record_name,
    summarise_seeds,
    unlearning_evaluator,
    write_run_record,
)
from harmonize.bundle.reconstruction_writer import ReconstructionWriter
from harmonize.errors import ConfigError
from harmonize.handlers import MachineUnlearningHandler
from harmonize.io import TMP_GLOB
from harmonize.keys import Keys, ReconMethod
from harmonize.losses import SSIML1Loss
from harmonize.metrics.reconstruction import TABLE_COLUMNS, unlearning_row
from harmonize.networks import ReconUNet
from harmonize.output_dir import record_written
from harmonize.recon.slices import KspaceSettings, anatomy_shift_splits
from harmonize.workflows.machine_unlearning import PrepareBatchKeys
from harmonize.workflows.recon_unlearning import predictor

STAGES = {
    "ft": ("ft",),
    "ga": ("ga",),
    "ga_l1": ("ga_l1",),
    "ga_l1_ft": ("ga_l1", "ft"),
    "nl": ("nl",),
    "nl_ft": ("nl", "ft"),
}


def tiny_net(seed: int = 0) -> ReconUNet:
    torch.manual_seed(seed)
    return ReconUNet(channels=(4, 8), strides=(2,))


@pytest.fixture(scope="module")
def splits():
    return anatomy_shift_splits(
        retain_train=2, forget_train=1, retain_test=1, forget_test=1, slices_per_volume=2, size=16,
        kspace=KspaceSettings(keep_kspace=False), seed=0,
    )


@pytest.mark.parametrize(("method", "stages"), list(STAGES.items()))
def test_stages_of_each_method(method: str, stages: tuple[str, ...]) -> None:
    assert method_stages(method) == stages
    assert forget_stage(method) == (None if method == "ft" else stages[0])
    assert has_finetune(method) == (stages[-1] == "ft")
    assert record_name(method) == f"model_{method}.json"


def test_every_unlearning_method_is_covered() -> None:
    assert {str(m) for m in UNLEARN_METHODS} == set(STAGES)
    assert [str(m) for m in EVALUATION_ORDER[:2]] == ["original", "oracle"]


def test_file_names() -> None:
    assert checkpoint_name("original") == "model.pt" and record_name(ReconMethod.ORIGINAL) == "model.json"
    assert checkpoint_name("oracle") == "model_oracle.pt"
    assert checkpoint_name(ReconMethod.GA_L1_FT) == "model_ga_l1_ft.pt"


@pytest.mark.parametrize("bad", ["oracle", "original", "retrain_subset", "gradient_ascent"])
def test_unlearn_rejects_other_methods(bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"Bundle id 'method': '{bad}' is not one of \['ft', 'ga', 'ga_l1', "
                                          r"'ga_l1_ft', 'nl', 'nl_ft'\]\. The original model is trained by "
                                          r"configs/train.json and the oracle by configs/oracle.json"):
        method_stages(bad)
    if bad == "gradient_ascent":
        with pytest.raises(ConfigError, match="'gradient_ascent' is not one of"):
            checkpoint_name(bad)


def test_load_weights(tmp_path: Path) -> None:
    source = tiny_net(1)
    torch.save(source.state_dict(), tmp_path / "model.pt")
    target = tiny_net(2)
    assert load_weights(target, tmp_path / "model.pt") is target
    for name, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[name], value)
    with pytest.raises(ConfigError, match=r"No model weights at .*missing.pt\. Train the original model first: "
                                          r"python -m monai.bundle run --config_file configs/train.json"):
        load_weights(target, tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="does not fit the network"):
        load_weights(ReconUNet(channels=(4, 8, 16), strides=(2, 2)), tmp_path / "model.pt")


def _stage(net: torch.nn.Module, batches: list[dict], handler: MachineUnlearningHandler | None,
           epochs: int) -> SupervisedTrainer:
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=batches, network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-3), loss_function=SSIML1Loss(),
        prepare_batch=PrepareBatchKeys(), train_handlers=[handler] if handler else None, decollate=False,
    )
    trainer.run()
    return trainer


def test_run_record(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 16, 16, generator=g)
    batch = {Keys.IMAGE: target + 0.1 * torch.rand(4, 1, 16, 16, generator=g), Keys.TARGET: target,
             Keys.FORGET: torch.tensor([True, False, False, True]), Keys.VOLUME_ID: ["f0", "r0", "r1", "f1"]}
    net = tiny_net()
    ga = MachineUnlearningHandler("ga")
    ft = MachineUnlearningHandler("ft")
    trainers = [_stage(net, [batch], ga, epochs=2), _stage(net, [batch, batch], ft, epochs=1)]
    path = tmp_path / "models" / record_name("ga_l1_ft")
    record = write_run_record(path, "ga_l1_ft", [[trainers[0], ga], [None, None], [trainers[1], ft]], lr=1e-3)
    assert read_run_record(path) == record
    assert record["method"] == "ga_l1_ft" and record["lr"] == 1e-3
    assert [s["stage"] for s in record["stages"]] == ["ga", "ft"]  # the stage without a trainer is skipped
    assert [(s["epochs"], s["iterations"]) for s in record["stages"]] == [(2, 2), (1, 2)]
    assert record["stages"][0]["num_seen"] == {"forget": 4, "retain": 4}
    assert record["stages"][1]["num_seen"] == {"forget": 0, "retain": 4} and record["stages"][1]["num_dropped"] == 4
    assert record["seconds"] == pytest.approx(sum(t.state.times["COMPLETED"] for t in trainers))
    assert record["seconds"] > 0
    assert not list(path.parent.glob(TMP_GLOB))  # written atomically
    plain = write_run_record(tmp_path / "model.json", "original", [[_stage(tiny_net(), [batch], None, 1), None]])
    assert plain["stages"][0]["stage"] == "train" and "num_seen" not in plain["stages"][0]


def test_read_run_record_missing_or_corrupt(tmp_path: Path) -> None:
    assert read_run_record(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"Cannot read the run record .*bad.json: .* Delete it or rerun"):
        read_run_record(tmp_path / "bad.json")


def test_evaluate_checkpoints(tmp_path: Path, splits) -> None:
    models = tmp_path / "models"
    models.mkdir()
    identity = tiny_net(0)  # the residual U-Net starts as the identity: its output is the zero-filled input
    torch.save(identity.state_dict(), models / checkpoint_name("original"))
    (models / record_name("original")).write_text(json.dumps({"method": "original", "seconds": 12.5}))
    changed = tiny_net(0)
    with torch.no_grad():
        changed.head.bias.fill_(0.2)  # a constant offset: a worse reconstruction
    torch.save(changed.state_dict(), models / checkpoint_name("ga"))  # no record: its time is unknown
    evaluator = unlearning_evaluator(tiny_net(3), splits, batch_size=3)
    result = evaluate_checkpoints(evaluator, models, tmp_path / "eval", sizes=splits.sizes())
    rows = {r["method"]: r for r in result.table}
    assert list(rows) == ["original", "ga"]  # the evaluation order, skipping missing checkpoints
    for key in ("bta_psnr", "bta_ssim", "kta_psnr", "kta_ssim", "ua_psnr", "ua_ssim"):
        assert rows["original"][key] == pytest.approx(result.zero_filled[key], rel=1e-5)
        assert rows["ga"][key] != pytest.approx(rows["original"][key], rel=1e-3)
    assert all(rows["ga"][f"{s}_psnr"] < rows["original"][f"{s}_psnr"] - 1 for s in ("bta", "kta", "ua"))
    # the evaluator gives the numbers of the per-set evaluation (unlearning_row), set by set
    direct = unlearning_row("ga", predictor(changed, (Keys.IMAGE,), "cpu"), splits.retain_test, splits.forget_test,
                            splits.forget_train, 0.0)
    for key in ("bta_psnr", "bta_ssim", "kta_psnr", "kta_ssim", "ua_psnr", "ua_ssim"):
        assert rows["ga"][key] == pytest.approx(direct[key], rel=1e-5)
    assert rows["original"]["seconds"] == 12.5 and math.isnan(rows["ga"]["seconds"])
    payload = json.loads(result.files["json"].read_text())
    assert payload["table"][1]["seconds"] == "nan" and payload["runs"]["ga"] is None
    assert payload["sizes"] == {"retain_train": 4, "forget_train": 2, "retain_test": 2, "forget_test": 2}
    markdown = result.files["markdown"].read_text()
    assert f"| original | {rows['original']['bta_psnr']:.2f} |" in markdown and "| ga |" in markdown
    only = evaluate_checkpoints(evaluator, models, methods=["ga"])
    assert [r["method"] for r in only.table] == ["ga"] and only.files == {}
    with pytest.raises(ConfigError, match=r"No checkpoint for \['oracle'\] in .*: run configs/train.json"):
        evaluate_checkpoints(evaluator, models, methods=["oracle"])
    with pytest.raises(ConfigError, match=r"No checkpoint for \['original', 'oracle'"):
        evaluate_checkpoints(evaluator, tmp_path)


def test_inference_files_from_a_folder_or_a_list(tmp_path: Path) -> None:
    for name in ("b.nii.gz", "a.nii", "notes.txt", "c.NII.GZ"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.nii.gz").mkdir()  # a folder is not a file
    assert inference_files(tmp_path) == [str(tmp_path / n) for n in ("a.nii", "b.nii.gz", "c.NII.GZ")]
    assert inference_files(tmp_path, images="x.nii.gz") == ["x.nii.gz"]
    assert inference_files(tmp_path, images=["y.nii", Path("z.nii")]) == ["y.nii", "z.nii"]
    assert inference_files(tmp_path / "missing") == [] and inference_files(None) == []
    (tmp_path / "file1000.H5").write_bytes(b"")
    assert inference_files(tmp_path, suffixes=FASTMRI_SUFFIXES) == [str(tmp_path / "file1000.H5")]


def test_check_inference_inputs_lists_every_problem(tmp_path: Path) -> None:
    image, weights = tmp_path / "a.nii.gz", tmp_path / "model.pt"
    image.write_bytes(b"")
    weights.write_bytes(b"")
    check_inference_inputs([str(image)], tmp_path, weights)  # nothing to report
    (tmp_path / "scan.png").write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        check_inference_inputs([str(tmp_path / "gone.nii"), str(tmp_path / "scan.png")], tmp_path, tmp_path / "x.pt")
    assert err.value.problems == [
        f"{tmp_path / 'gone.nii'}: no such file.",
        f"{tmp_path / 'scan.png'}: not one of the file types this config reads (*.nii, *.nii.gz).",
        f"No model weights at {tmp_path / 'x.pt'}: train them first (python -m monai.bundle run --config_file "
        "configs/train.json, or unlearn.json for --method <m>) with the same bundle_root, or pass --ckpt_path.",
    ]
    a, a_recon = tmp_path / "data" / "a.nii.gz", tmp_path / "data" / "a_recon.nii.gz"
    other = tmp_path / "other" / "a.nii"
    with pytest.raises(ConfigError) as err:
        check_inference_inputs([str(a), str(a_recon), str(other)], tmp_path, weights,
                               ReconstructionWriter(tmp_path / "data"))
    assert err.value.problems[-3:] == [
        f"{a}: its reconstruction would replace the input {a_recon}: choose another output_dir.",
        f"{other}: its reconstruction would replace the input {a_recon}: choose another output_dir.",
        f"{a} and {other} have the same name: both would be written to {tmp_path / 'data' / 'a_recon.nii.gz'}.",
    ]
    with pytest.raises(ConfigError, match=r"No input files \(\*.h5\) in dataset_dir=/nowhere"):
        check_inference_inputs([], "/nowhere", weights, suffixes=FASTMRI_SUFFIXES)
    # a file of the user's where a reconstruction would be written is named; one harmonize wrote is replaced
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_recon.nii.gz").write_bytes(b"the user's")
    with pytest.raises(ConfigError) as err:
        check_inference_inputs([str(image)], tmp_path, weights, ReconstructionWriter(tmp_path / "out"))
    assert err.value.problems == [(
        f"Bundle inference would replace 1 file(s) that harmonize did not write: {tmp_path / 'out' / 'a_recon.nii.gz'}"
        ". harmonize replaces only files it wrote (listed in the folder's .harmonize-outputs.json): move these away, "
        "or choose another output folder.")]
    record_written([tmp_path / "out" / "a_recon.nii.gz"], "Bundle inference")  # as if an earlier run wrote it
    check_inference_inputs([str(image)], tmp_path, weights, ReconstructionWriter(tmp_path / "out"))


def _seed_table(folder: Path, seed: int, bta: float) -> Path:
    """An ``evaluate.json`` output folder of one seed: two methods, the second run in two stages."""
    rows = [dict.fromkeys(TABLE_COLUMNS, 20.0) | {"method": m, "bta_psnr": bta + i, "seconds": 1.0}
            for i, m in enumerate(("original", "ga_l1_ft"))]
    runs = {"original": {"seed": seed, "stages": [{"iterations": 60}]},
            "ga_l1_ft": {"seed": seed, "stages": [{"iterations": 3}, {"iterations": 4}]}}
    folder.mkdir()
    (folder / "recon_unlearning.json").write_text(json.dumps({"table": rows, "runs": runs}))
    return folder


def test_summarise_seeds_means_intervals_and_iterations(tmp_path: Path) -> None:
    dirs = [_seed_table(tmp_path / f"eval{s}", s, bta) for s, bta in ((0, 20.0), (1, 22.0), (2, 24.0))]
    result = summarise_seeds(dirs, tmp_path / "over_seeds")
    original, unlearned = result.table
    assert original["bta_psnr"] == pytest.approx(22.0) and unlearned["bta_psnr"] == pytest.approx(23.0)
    low, high = original["bta_psnr_ci"]  # t(0.975, 2) = 4.303, sd 2, n 3
    assert (low, high) == pytest.approx((22.0 - 4.303 * 2 / 3**0.5, 22.0 + 4.303 * 2 / 3**0.5), abs=1e-3)
    assert (original["iterations"], unlearned["iterations"]) == (60, 7)
    assert [[r["seed"] for r in t] for t in result.per_seed] == [[0, 0], [1, 1], [2, 2]]
    markdown = (tmp_path / "over_seeds" / "recon_unlearning.md").read_text()
    assert "| ga_l1_ft | 23.00 [18.03, 27.97] |" in markdown
    assert markdown.rstrip().endswith("| 7 | - |")  # no oracle among the rows: no share of its iterations
    payload = json.loads((tmp_path / "over_seeds" / "recon_unlearning.json").read_text())
    assert len(payload["per_seed"]) == 3 and payload["table"][1]["iterations"] == 7


def test_summarise_seeds_refuses_missing_or_different_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one seed"):
        summarise_seeds([])
    first = _seed_table(tmp_path / "eval0", 0, 20.0)
    with pytest.raises(ConfigError, match="Run configs/evaluate.json with output_dir"):
        summarise_seeds([first, tmp_path / "missing"])
    other = tmp_path / "eval1"
    other.mkdir()
    (other / "recon_unlearning.json").write_text(json.dumps({"table": [{"method": "original"}], "runs": {}}))
    with pytest.raises(ConfigError, match=r"has the methods \['original'\], the first seed's table has"):
        summarise_seeds([first, other])
