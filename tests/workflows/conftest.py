"""Fixtures of the workflow tests: tiny brain-age settings and trained networks (test_brain_age*.py), the tiny
cohort with a forget list and trained models (test_forget*.py)."""

from __future__ import annotations

import json

import pytest
import torch

from harmonize.data.forget_list import mark_forget
from harmonize.data.manifest import read_manifest, write_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.networks import TissueSegmenter
from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
from harmonize.workflows.bundle_model import load_bundle_model
from harmonize.workflows.model_file import save_model
from harmonize.workflows.unlearning import UnlearningSettings

#: A tiny brain-age network, and a tiny tissue segmenter (4 classes: background, CSF, GM, WM).
BRAIN_AGE_CHANNELS = (8, 8, 8, 8)
SEGMENTER_CHANNELS = (4, 8, 16)
#: The tissue-segmentation bundle's preprocessing.
SEGMENTATION_TRANSFORM = {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True}


def brain_age_settings(method: str, **kwargs) -> BrainAgeSettings:
    """Two epochs (one of warm-up) of the tiny brain-age network with ``method``, batches of 6; ``kwargs`` override."""
    weight = {"reversal_weight": 1.0} if method == "dann" else {"beta": 1.0}
    unlearning = UnlearningSettings(method=method, warmup_epochs=1, **weight)
    return BrainAgeSettings(unlearning=unlearning, max_epochs=2, channels=BRAIN_AGE_CHANNELS, feature_dim=16,
                            batch_size=6, **kwargs)


@pytest.fixture(scope="session")
def trained_brain_age(tiny_cohort):
    """method -> a network trained with :func:`brain_age_settings` on the tiny cohort (none, unlearning, dann)."""
    return {m: train_brain_age(tiny_cohort, brain_age_settings(m)) for m in ("none", "unlearning", "dann")}


@pytest.fixture(scope="session")
def forget_cohort(tiny_cohort, tmp_path_factory):
    """The tiny cohort's manifest with one withdrawn training subject per site (3 of 12), beside its scans."""
    frame = mark_forget(read_manifest(tiny_cohort), 0.25, seed=0)
    return write_manifest(frame, tmp_path_factory.mktemp("forget") / "manifest.csv")


@pytest.fixture(scope="session")
def brain_age_model_file(tiny_cohort, tmp_path_factory):
    """A brain-age model file trained 3 epochs with domain unlearning on the tiny cohort."""
    unlearning = UnlearningSettings(method="unlearning", warmup_epochs=1, beta=1.0)
    settings = BrainAgeSettings(unlearning=unlearning, max_epochs=3, channels=BRAIN_AGE_CHANNELS, feature_dim=16,
                                batch_size=3, augment=False)
    model = train_brain_age(tiny_cohort, settings)
    return save_model(model, tmp_path_factory.mktemp("model") / "unlearning.pt")


@pytest.fixture(scope="session")
def segmentation_bundle(tmp_path_factory):
    """A tissue-segmentation bundle folder (configs, ``models/model.pt``, ``models/site_index.json``).

    Its network is untrained (fixed seed): its Dice is low but real, and forgetting and the audit need no training.
    """
    root = tmp_path_factory.mktemp("segmentation_bundle")
    (root / "configs").mkdir()
    (root / "models").mkdir()
    network = {"_target_": "harmonize.networks.TissueSegmenter", "channels": list(SEGMENTER_CHANNELS)}
    config = {"imports": ["$import os"], "bundle_root": ".", "output_dir": "$os.path.join(@bundle_root, 'eval')",
              "network_def": network, "transforms": SEGMENTATION_TRANSFORM, "taps": ["bottleneck"]}
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    torch.save(TissueSegmenter(channels=SEGMENTER_CHANNELS).state_dict(), root / "models" / "model.pt")
    CategoryIndex(["site0", "site1", "site2"]).save(root / "models" / "site_index.json")
    return root


@pytest.fixture(scope="session")
def forget_frame(forget_cohort):
    """The frame of ``forget_cohort``."""
    return read_manifest(forget_cohort)


@pytest.fixture(scope="session")
def segmenter(segmentation_bundle, forget_frame):
    """The model of ``segmentation_bundle``, as ``harmonize forget`` loads it (treat it as read-only)."""
    return load_bundle_model(segmentation_bundle, forget_frame)
