"""Fixtures of the bundle tests: the tiny cohort preprocessed the way the bundles' training expects."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harmonize.data.preprocess import PreprocessConfig, preprocess_manifest

#: The tiny cohort (24^3 at 8.3 mm) is preprocessed to 16^3 at 10 mm: another spacing and shape than the raw scans.
TINY_PREPROCESS = PreprocessConfig(target_spacing=10.0, target_shape=(16, 16, 16))


@pytest.fixture(scope="session")
def tiny_preprocessed(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest of the tiny cohort after ``harmonize preprocess`` (per-site landmarks, 16^3 at 10 mm); read-only."""
    out = tmp_path_factory.mktemp("tiny_preprocessed") / "pre"
    return preprocess_manifest(tiny_cohort, out, TINY_PREPROCESS, progress=False).manifest


#: Seconds a two-process torchrun test may take before it fails (about 20 s on 2 shared cores).
TORCHRUN_TIMEOUT = 240


def run_torchrun(arguments: list[str], cwd: Path) -> tuple[str, str]:
    """Run ``torchrun --standalone --nproc_per_node=2 -m monai.bundle run ARGUMENTS`` on CPU with this harmonize.

    Returns:
        ``(stdout, stderr)``; the test fails on a non-zero exit, or when the run takes over
        :data:`TORCHRUN_TIMEOUT` seconds (its whole process group is killed).
    """
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun is not None, "torchrun (installed with torch) is not on the PATH"
    command = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", *arguments]
    bundles = Path(__file__).resolve().parents[2] / "bundles"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(bundles.parent), os.environ.get("PYTHONPATH", "")])}  # this harmonize
    # Own process group, so that a hang is ended with torchrun's worker processes, not only torchrun.
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TORCHRUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the two-process run took over {TORCHRUN_TIMEOUT} s:\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out, err
