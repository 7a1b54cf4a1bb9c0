"""Deploying the reconstruction bundle: inference.json (NIfTI) and inference_fastmri.json (HDF5) on any image size,
ckpt_export, multi_gpu_train.json, multi_gpu_evaluate.json.

The network is tiny (about 10k parameters, total stride 8); inference reads NIfTI files written here, and the
weights are either a fresh network's (its zero head makes it the identity: output = zero-filled input) or a
perturbed one's.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import h5py
import ignite.distributed as idist
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, run
from monai.networks.blocks.fft_utils_t import fftn_centered_t, ifftn_centered_t

from harmonize.bundle import check_overrides
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.io import TMP_GLOB
from harmonize.keys import Keys
from harmonize.networks import ReconUNet
from harmonize.recon import UndersampleVolumed

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "recon_unlearning"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
INFERENCE = str(CONFIGS / "inference.json")
#: A tiny network with the bundle's total stride (8): 30 x 37 slices are padded to 32 x 40.
NETWORK = {"network_def#channels": [4, 8, 8, 8], "network_def#strides": [2, 2, 2]}


def tiny_network(seed: int, perturbed: bool = True) -> ReconUNet:
    torch.manual_seed(seed)
    net = ReconUNet(channels=(4, 8, 8, 8), strides=(2, 2, 2))
    if perturbed:
        with torch.no_grad():
            net.head.weight.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(seed))
    return net.eval()


def save_weights(root: Path, name: str, net: ReconUNet) -> Path:
    path = root / "models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4) if affine is None else affine), path)
    return path


def infer(root: Path, **overrides) -> None:
    run(config_file=INFERENCE, meta_file=META, logging_file=False, bundle_root=str(root), device="cpu",
        **{**NETWORK, **overrides})


def harmonize_error(err: BaseException) -> HarmonizeError:
    """The HarmonizeError under MONAI's wrappers (the config expression's and the transform's RuntimeError)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, HarmonizeError):
        cause = cause.__cause__
    assert cause is not None, f"no HarmonizeError under {err!r}"
    return cause


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_zoo_property_check_passes_for_inference() -> None:
    """MONAI's check of the standard ids (bundle_root, dataset_dir, inferer, ...) with the defaults, before any data."""
    flow = ConfigWorkflow(config_file=INFERENCE, meta_file=META, workflow_type="infer", logging_file=False)
    flow.initialize()
    assert flow.check_properties() == []
    assert flow.dataset_dir.endswith("/data") and len(flow.dataset) == 0
    assert type(flow.inferer).__name__ == "SliceInferer"


def _y_profile(shape: tuple[int, int, int], along: int) -> np.ndarray:
    """A volume that varies only along array axis ``along`` (smooth, positive)."""
    profile = 1.0 + np.sin(np.linspace(0, 3 * np.pi, shape[along])) ** 2
    view = [1, 1, 1]
    view[along] = shape[along]
    return np.broadcast_to(profile.reshape(view), shape).copy() * 100.0


def test_mask_runs_along_left_right_whatever_the_file_orientation(tmp_path: Path) -> None:
    """Phase encoding is left-right in the world, as in training, and the output lands on the input's grid.

    With the identity network the output is the zero-filled input. An image that varies only anterior-posterior
    has all its k-space energy in the always-sampled centre column, so it comes back exactly, whether the file is
    stored RAS or with its axes swapped and flipped; one that varies left-right loses lines and does not.
    """
    save_weights(tmp_path, "model.pt", tiny_network(0, perturbed=False))
    ras = _y_profile((30, 37, 3), along=1)  # varies along world Y
    swapped = np.flip(ras.transpose(1, 0, 2), axis=0).copy()  # array (Y, X, Z), i running posterior
    swapped_affine = np.array([[0, 1, 0, 0], [-1, 0, 0, 36], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    left_right = _y_profile((30, 37, 3), along=0)  # varies along world X
    data = tmp_path / "data"
    save_nifti(data / "ras.nii.gz", ras)
    save_nifti(data / "swapped.nii.gz", swapped, swapped_affine)
    save_nifti(data / "left_right.nii.gz", left_right)
    infer(tmp_path, dataset_dir=str(data))
    out = tmp_path / "eval" / "reconstructions"
    for name, source, affine in (("ras", ras, np.eye(4)), ("swapped", swapped, swapped_affine)):
        image = nib.load(out / f"{name}_recon.nii.gz")
        np.testing.assert_allclose(image.affine, affine)
        np.testing.assert_allclose(image.get_fdata(), source, rtol=0, atol=1e-3)
    error = np.abs(nib.load(out / "left_right_recon.nii.gz").get_fdata() - left_right).mean()
    assert error > 1.0  # aliasing from the skipped left-right lines


def test_any_size_with_the_trained_or_an_unlearned_network(tmp_path: Path) -> None:
    """A 30 x 37 slice (not a multiple of 8): the output equals the eager network on the prepared slice."""
    original, unlearned = tiny_network(1), tiny_network(2)
    save_weights(tmp_path, "model.pt", original)
    save_weights(tmp_path, "model_nl_ft.pt", unlearned)
    source = save_nifti(tmp_path / "in" / "slice.nii", 80 * np.random.default_rng(0).random((30, 37)))
    before = digest(source)
    infer(tmp_path, images=[str(source)], output_dir=str(tmp_path / "original"))
    infer(tmp_path, images=[str(source)], output_dir=str(tmp_path / "nl_ft"), method="nl_ft")
    assert digest(source) == before and not list(source.parent.glob(TMP_GLOB))

    image = torch.from_numpy(nib.load(source).get_fdata().astype(np.float32))
    prepared = image.T.flip(0)[None, :, :, None]  # rows anterior first, columns left to right, as in training
    sample = UndersampleVolumed(seed=0)({Keys.IMAGE: prepared})
    for folder, net in (("original", original), ("nl_ft", unlearned)):
        written = nib.load(tmp_path / folder / "slice_recon.nii.gz")
        assert written.shape == (30, 37) and written.get_data_dtype() == np.float32
        with torch.no_grad():
            pred = net(sample[Keys.IMAGE][..., 0][None])[0, 0]
        expected = (pred.flip(0).T * sample[Keys.SCALE]).numpy()
        np.testing.assert_allclose(written.get_fdata(), expected, rtol=1e-4, atol=1e-4)
    first = nib.load(tmp_path / "original" / "slice_recon.nii.gz").get_fdata()
    assert np.abs(first - nib.load(tmp_path / "nl_ft" / "slice_recon.nii.gz").get_fdata()).max() > 0.1


def test_bad_inputs_are_refused_naming_the_file(tmp_path: Path) -> None:
    save_weights(tmp_path, "model.pt", tiny_network(0))
    series = save_nifti(tmp_path / "series.nii.gz", np.ones((8, 8, 4, 3)))
    with pytest.raises(RuntimeError) as err:
        infer(tmp_path, images=[str(series)])
    assert str(harmonize_error(err.value)).startswith(f"{series}: expected one magnitude image, got 3 channels")
    blank = save_nifti(tmp_path / "blank.nii.gz", np.zeros((8, 8, 4)))
    with pytest.raises(RuntimeError) as err:
        infer(tmp_path, images=[str(blank)])
    assert str(harmonize_error(err.value)).startswith(f"{blank}: the image is empty (maximum 0)")
    with pytest.raises(RuntimeError) as err:
        infer(tmp_path / "elsewhere", images=[str(tmp_path / "missing.nii.gz"), str(blank)])
    cause = harmonize_error(err.value)
    assert isinstance(cause, ConfigError)
    assert f"{tmp_path / 'missing.nii.gz'}: no such file." in str(cause)
    assert f"No model weights at {tmp_path / 'elsewhere' / 'models' / 'model.pt'}" in str(cause)
    with pytest.raises(RuntimeError) as err:
        infer(tmp_path, dataset_dir=str(tmp_path / "empty"))
    assert "No input files (*.nii, *.nii.gz) in dataset_dir=" in str(harmonize_error(err.value))
    assert not (tmp_path / "eval").exists()


def _fastmri_file(path: Path, with_target: bool, seed: int) -> np.ndarray:
    """A single-coil fastMRI file (3 slices of 24 x 20): a training-set layout (target, max) or a test-set one
    (a mask of sampled lines, no target). Returns the complex images."""
    rng = np.random.default_rng(seed)
    images = (rng.random((3, 24, 20)) * np.exp(1j * rng.random((3, 24, 20)))).astype(np.complex64)
    kspace = _kspace_of(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if with_target:
            target = np.abs(images)[:, 4:20, 2:18]
            f.create_dataset("kspace", data=kspace)
            f.create_dataset("reconstruction_esc", data=target)
            f.attrs["max"] = float(target.max())
        else:
            mask = np.zeros(20, dtype=bool)
            mask[::3] = mask[8:12] = True
            f.create_dataset("kspace", data=kspace * mask)
            f.create_dataset("mask", data=mask)
    return images


def test_fastmri_files_are_reconstructed_to_hdf5(tmp_path: Path) -> None:
    """inference_fastmri.json: a challenge test file (its own mask, no target) and a training file (the training
    mask, cropped to its 16 x 16 target); with the identity network the output is the zero-filled magnitude."""
    save_weights(tmp_path, "model.pt", tiny_network(0, perturbed=False))
    test_images = _fastmri_file(tmp_path / "h5" / "file_test.h5", with_target=False, seed=0)
    _fastmri_file(tmp_path / "h5" / "file_train.h5", with_target=True, seed=1)
    config = [INFERENCE, str(CONFIGS / "inference_fastmri.json")]
    flow = ConfigWorkflow(config_file=config, meta_file=META, workflow_type="infer", logging_file=False,
                          bundle_root=str(tmp_path), dataset_dir=str(tmp_path / "h5"), device="cpu", **NETWORK)
    flow.initialize()
    assert flow.check_properties() == []
    assert len(flow.dataset) == 6
    run(config_file=config, meta_file=META, logging_file=False, bundle_root=str(tmp_path), device="cpu",
        dataset_dir=str(tmp_path / "h5"), **NETWORK)
    out = tmp_path / "eval" / "reconstructions"
    with h5py.File(out / "file_test.h5", "r") as f:
        recon = f["reconstruction"][()]
    mask = np.zeros(20, dtype=bool)
    mask[::3] = mask[8:12] = True
    kspace = torch.view_as_real(torch.from_numpy(_kspace_of(test_images) * mask))
    expected = np.abs(torch.view_as_complex(ifftn_centered_t(kspace, spatial_dims=2).contiguous()).numpy())
    assert recon.dtype == np.float32 and recon.shape == (3, 24, 20)
    np.testing.assert_allclose(recon, expected, rtol=1e-4, atol=1e-5)
    with h5py.File(out / "file_train.h5", "r") as f:
        assert f["reconstruction"].shape == (3, 16, 16)
    with pytest.raises(RuntimeError) as err:
        run(config_file=config, meta_file=META, logging_file=False, bundle_root=str(tmp_path), device="cpu",
            dataset_dir=str(tmp_path / "h5"), output_dir=str(tmp_path / "h5"), **NETWORK)
    assert "its reconstruction would replace the input" in str(harmonize_error(err.value))


def _kspace_of(images: np.ndarray) -> np.ndarray:
    stacked = torch.view_as_real(torch.from_numpy(images))
    return torch.view_as_complex(fftn_centered_t(stacked, spatial_dims=2).contiguous()).numpy()


def test_ckpt_export_scripts_a_model_that_takes_any_size(tmp_path: Path) -> None:
    """`monai.bundle ckpt_export` (scripted) gives the eager network's output on a size that is not a multiple of 8."""
    net = tiny_network(3)
    weights = save_weights(tmp_path, "model.pt", net)
    exported = tmp_path / "models" / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(weights), meta_file=META,
                config_file=INFERENCE, bundle_root=str(tmp_path), **NETWORK)
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(exported), _extra_files=extra)
    assert "network_def" in json.loads(extra["inference.json"])
    for shape in ((2, 1, 30, 37), (1, 1, 64, 64), (1, 1, 5, 9)):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            expected, actual = net(x), scripted(x)
        assert actual.shape == shape and float((expected - x).abs().max()) > 0.05
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_multi_gpu_train_runs_as_one_gloo_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DDP config in one process (world size 1, gloo): the network is wrapped, the data sharded, the model saved
    unwrapped. (Two processes under torchrun, as the README shows, take about 25 s on 2 cores: not run here.)"""
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": ""}.items():
        monkeypatch.setenv(key, value)
    flow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")], meta_file=META,
        logging_file=False, workflow_type="train", bundle_root=str(tmp_path), max_epochs=1, batch_size=4,
        **{"scenario#data#size": 16, "scenario#data#slices_per_volume": 2, "scenario#data#retain_train_volumes": 3,
           "scenario#data#forget_train_volumes": 1, "scenario#data#retain_test_volumes": 1, "scenario#data#forget_test_volumes": 1,
           **NETWORK},
    )
    flow.initialize()
    try:
        trainer = flow.parser.get_parsed_content("train#trainer")
        assert isinstance(trainer.network, torch.nn.parallel.DistributedDataParallel)
        assert type(trainer.data_loader.sampler).__name__ == "DistributedSampler"
        flow.run()
    finally:
        flow.finalize()
    assert not torch.distributed.is_initialized() and idist.get_world_size() == 1  # nothing left for later tests
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert set(state) == set(tiny_network(0).state_dict())  # no "module." prefix
    record = json.loads((tmp_path / "models" / "model.json").read_text())
    assert record["processes"] == 1 and record["stages"][0]["iterations"] == 2  # 8 slices, batches of 4


def test_multi_gpu_evaluate_runs_as_one_gloo_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """multi_gpu_evaluate.json (world size 1, gloo): the slices go through a DistributedSampler, the metrics handler
    gathers the shards, and the table is the single-process evaluate.json's. (Its gathering across two shards:
    tests/handlers/test_reconstruction_metrics.py.)"""
    tiny = {"scenario#data#size": 16, "scenario#data#slices_per_volume": 2, "scenario#data#retain_train_volumes": 3,
            "scenario#data#forget_train_volumes": 1, "scenario#data#retain_test_volumes": 1,
            "scenario#data#forget_test_volumes": 1,
            "max_epochs": 1, "batch_size": 4, "device": "cpu", **NETWORK}
    train = [str(CONFIGS / "train.json")]
    run(config_file=train, meta_file=META, logging_file=False, bundle_root=str(tmp_path), **tiny)
    run(config_file=[*train, str(CONFIGS / "evaluate.json")], meta_file=META, logging_file=False,
        bundle_root=str(tmp_path), output_dir=str(tmp_path / "single"), **tiny)
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": ""}.items():
        monkeypatch.setenv(key, value)
    flow = ConfigWorkflow(
        config_file=[*train, str(CONFIGS / "evaluate.json"), str(CONFIGS / "multi_gpu_evaluate.json")],
        meta_file=META, logging_file=False, workflow_type="eval", bundle_root=str(tmp_path),
        output_dir=str(tmp_path / "multi"), **tiny)
    flow.initialize()
    try:
        assert flow.check_properties() == []
        assert type(flow.evaluator.data_loader.sampler).__name__ == "DistributedSampler"
        flow.run()
    finally:
        flow.finalize()
    assert not torch.distributed.is_initialized()  # nothing left for later tests
    single, multi = (json.loads((tmp_path / name / "recon_unlearning.json").read_text()) for name in ("single", "multi"))
    assert [row["method"] for row in multi["table"]] == ["original"]
    for got, want in ((multi["table"][0], single["table"][0]), (multi["zero_filled"], single["zero_filled"])):
        for key in ("bta_psnr", "bta_ssim", "kta_psnr", "kta_ssim", "ua_psnr", "ua_ssim"):
            assert got[key] == pytest.approx(want[key], rel=1e-5)


def test_documented_inference_ids_exist() -> None:
    """The ids the README tells a user to override, in each inference config (a typo is rejected)."""
    ids = {"bundle_root": ".", "dataset_dir": ".", "images": None, "method": "nl_ft", "ckpt_path": "m.pt",
           "output_dir": ".", "seed": 1, "mask_type": "random", "acceleration": 8.0, "center_fraction": 0.04,
           "postfix": "r", "sw_batch_size": 2, **NETWORK}
    check_overrides([INFERENCE], ids)
    check_overrides([INFERENCE, str(CONFIGS / "inference_fastmri.json")], {**ids, "crop": [320, 320]})
    check_overrides([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")], {"max_epochs": 1})
    with pytest.raises(ConfigError, match="'acceleraton': did you mean 'acceleration'"):
        check_overrides([INFERENCE], {"acceleraton": 8.0})
