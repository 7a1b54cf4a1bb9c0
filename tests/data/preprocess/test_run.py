"""Tests of harmonize.data.preprocess.run: whole runs, one run per folder at a time, steps refused together."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from harmonize.data.manifest import read_manifest
from harmonize.data.preprocess import MANIFEST_FILENAME, PreprocessConfig
from harmonize.errors import ConfigError
from harmonize.locks import FolderLockedError

from .conftest import CONFIG, run


def test_outputs_are_ras_resampled_cropped_and_normalised_per_site(make_cohort, tmp_path):
    manifest = make_cohort(sites=("siteA", "siteB"), per_site=3)
    result = run(manifest, tmp_path / "out")
    assert (result.processed, result.cached) == (6, 0)
    out = read_manifest(result.manifest)
    source = read_manifest(manifest)
    assert list(out.columns) == list(source.columns) and list(out.index) == list(source.index)
    assert out.drop(columns=["image", "label"]).equals(source.drop(columns=["image", "label"]))
    assert result.manifest.read_text().splitlines()[1].startswith("siteA-00,images/siteA-00.nii.gz,labels/")
    tissue_means = {}
    for sid, image_path, label_path in zip(out["subject_id"], out["image"], out["label"]):
        image = nib.load(image_path)
        assert image.shape == (16, 16, 16)
        np.testing.assert_allclose(image.header.get_zooms(), (1.5, 1.5, 1.5))
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        assert image.get_data_dtype() == np.float32
        data = image.get_fdata()
        mask = nib.load(tmp_path / "out" / "masks" / f"{sid}.nii.gz").get_fdata() > 0
        assert 0.1 < mask.mean() < 0.4
        assert abs(data[mask].mean()) < 1e-4 and abs(data[mask].std() - 1) < 1e-2
        assert np.all(data[~mask] == 0)
        label = nib.load(label_path)
        assert label.get_data_dtype() == np.uint8 and np.allclose(label.affine, image.affine)
        labels = np.asarray(label.dataobj)
        assert set(np.unique(labels)) == {0, 1, 2}
        tissue_means[sid] = data[labels == 1].mean() - data[labels == 2].mean()
    # the label followed the image (siteB was stored LAS): inner tissue is brighter after preprocessing
    assert min(tissue_means.values()) > 1.5
    # per-site standardisation removed the 2.5x intensity scaling of siteB: tissue contrast matches within 10%
    assert tissue_means["siteB-00"] == pytest.approx(tissue_means["siteA-00"], rel=0.1)


#: A second `preprocess` process that stops before its first scan until the file argv[4] exists.
PAUSED_RUN = """
import sys, time
from pathlib import Path
from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest, stages
real = stages.spatial_stage
def paused(scan, config, out):
    Path(sys.argv[3]).touch()
    while not Path(sys.argv[4]).exists():
        time.sleep(0.05)
    return real(scan, config, out)
stages.spatial_stage = paused
config = PreprocessConfig(target_spacing=1.5, target_shape=(16, 16, 16))
print(preprocess_manifest(sys.argv[1], sys.argv[2], config, progress=False).processed)
"""


def test_two_concurrent_runs_into_one_folder_never_both_succeed(make_cohort, tmp_path):
    manifest = make_cohort(per_site=2, n_train=1)
    out, started, go = tmp_path / "out", tmp_path / "started", tmp_path / "go"
    root = Path(__file__).resolve().parents[3]
    first = subprocess.Popen([sys.executable, "-c", PAUSED_RUN, str(manifest), str(out), str(started), str(go)],
                             cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True)
    try:
        while not started.exists():  # the first run holds the folder and is about to write
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        other_shape = PreprocessConfig(target_spacing=1.5, target_shape=(12, 12, 12))
        for config in (CONFIG, other_shape):  # the same settings or others: refused at once, nothing touched
            with pytest.raises(FolderLockedError, match=rf"{out} is in use by process {first.pid} on host .*"
                                                        r"'harmonize preprocess'.*Wait for that run to finish"):
                run(manifest, out, config)
            with pytest.raises(FolderLockedError):
                run(manifest, out, config, overwrite=True)
    finally:
        go.touch()
        stdout, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and stdout.strip() == "4"
    for path in read_manifest(out / MANIFEST_FILENAME)["image"]:
        assert nib.load(path).shape == (16, 16, 16)
    assert run(manifest, out).cached == 4  # once the first run is done, the folder is free (and its cache valid)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fit_only": True, "shard": "1/2"}, "Arguments fit_only (--fit-only) and shard (--shard) are separate steps"),
    ({"shard": "1/2", "merge": True}, "Arguments shard (--shard) and merge (--merge) are separate steps"),
    ({"merge": True, "overwrite": True}, "Argument 'overwrite' (--overwrite) goes with the fit step"),
    ({"shard": "1/2", "bids_derivatives": True},
     "Argument 'bids_derivatives' (--bids-derivatives) goes with the merge"),
])
def test_steps_that_do_not_go_together_are_refused_before_any_output(make_cohort, tmp_path, kwargs, message):
    manifest = make_cohort(per_site=1, n_train=1)
    with pytest.raises(ConfigError) as err:
        run(manifest, tmp_path / "out", **kwargs)
    assert str(err.value).startswith(message)
    assert not (tmp_path / "out").exists()
