"""save_model / load_model round trips and their errors; load_bundle_model on a tiny bundle folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harmonize.data.dataset import make_dataset
from harmonize.data.manifest import read_manifest
from harmonize.data.site_index import CategoryIndex
from harmonize.errors import HarmonizeError
from harmonize.io import TMP_GLOB
from harmonize.keys import Keys
from harmonize.networks import BrainAgeRegressor
from harmonize.workflows.brain_age import (
    BrainAgeSettings,
    brain_age_features,
    train_brain_age,
)
from harmonize.workflows.bundle_model import load_bundle_model
from harmonize.workflows.model_file import (
    MODEL_FORMAT,
    load_model,
    save_model,
)
from harmonize.workflows.unlearning import UnlearningSettings

#: A slim encoder for 24^3 volumes (three poolings: 24 -> 3).
CHANNELS = (8, 8, 8, 8)
FEATURES = 16


def _settings(method: str) -> BrainAgeSettings:
    unlearning = UnlearningSettings(method=method, warmup_epochs=1, beta=1.0)
    return BrainAgeSettings(unlearning=unlearning, max_epochs=2, channels=CHANNELS, feature_dim=FEATURES,
                            batch_size=6)


@pytest.fixture(scope="module")
def models(tiny_cohort):
    index = CategoryIndex(["site0", "site1", "site2"])
    return {m: train_brain_age(tiny_cohort, _settings(m), site_index=index) for m in ("none", "unlearning")}


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_keeps_weights_settings_heads_and_history(models, tmp_path, tiny_cohort):
    model = models["unlearning"]
    path = save_model(model, tmp_path / "sub" / "unlearning.pt")
    assert path == tmp_path / "sub" / "unlearning.pt"
    assert list(path.parent.glob(TMP_GLOB)) == []  # written atomically, nothing left behind
    loaded = load_model(path)
    assert _same_state(loaded.network, model.network)
    assert loaded.settings.to_dict() == model.settings.to_dict()
    assert loaded.site_index == model.site_index
    assert loaded.history == model.history and len(loaded.history) == 2
    assert loaded.seconds == pytest.approx(model.seconds)
    assert loaded.handler is not None and _describe(loaded.handler) == _describe(model.handler)
    assert loaded.handler.history == model.history
    assert _same_state(loaded.handler.heads, model.handler.heads)
    assert loaded.handler.confounds[0].num_classes == 3
    image = torch.randn(2, 1, 24, 24, 24)
    with torch.no_grad():
        assert torch.equal(loaded.network.eval()(image), model.network.eval()(image))


def _describe(handler) -> dict:
    """Every setting of a handler: objective, adversary, warm-up, taps, mask, and each confound with its head."""
    mask = handler.sample_mask
    ages = {Keys.AGE: torch.linspace(20.0, 90.0, 8)}
    return {
        "objective": (type(handler.objective).__name__, handler.objective.config()),
        "adversary": (type(handler.adversary).__name__, handler.adversary.config()),
        "warmup": handler.warmup.config(),
        "taps": list(handler.taps.names),
        "mask": None if mask is None else (type(mask).__name__, vars(mask)),
        "confounds": [(c.name, c.key, str(c.kind), c.num_classes, list(c.bin_edges or []), c.beta, c.alpha,
                       c.class_weights, c.head.config, None if c.prior is None else c.prior(ages).tolist())
                      for c in handler.confounds],
    }


#: One training run per recipe (cohort, settings), each saved and reloaded.
RECIPES = {
    "paper": ("plain", UnlearningSettings.paper(beta=1.0, warmup_epochs=1, head_steps=2, betas={"site": 3.0})),
    "alternating": ("plain", UnlearningSettings.paper(mode="alternating", warmup_epochs=1, balanced_heads=True)),
    "refit": ("plain", UnlearningSettings.refit_adversary(warmup_epochs=1, head_refit_steps=5,
                                                          confounds=("site", "sex", "age"))),
    "refit_pairs": ("biased", UnlearningSettings.refit_adversary(warmup_epochs=1, head_refit_steps=5,
                                                                 overlap_only=True, overlap_mode="pairs")),
    "dann": ("plain", UnlearningSettings.dann(reversal_weight=0.5, warmup_epochs=1, overlap_only=True,
                                              overlap_range=(40.0, 72.0))),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_reloads_to_an_equal_handler(recipe, tiny_cohort, tiny_cohort_biased, tmp_path):
    cohort, unlearning = RECIPES[recipe]
    settings = BrainAgeSettings(unlearning=unlearning, max_epochs=1, channels=CHANNELS, feature_dim=FEATURES,
                                batch_size=6, taps=("encoder.block3", "encoder"))
    model = train_brain_age(tiny_cohort if cohort == "plain" else tiny_cohort_biased, settings)
    loaded = load_model(save_model(model, tmp_path / f"{recipe}.pt"))
    assert loaded.settings.unlearning == model.settings.unlearning
    assert _describe(loaded.handler) == _describe(model.handler)
    assert _same_state(loaded.handler.heads, model.handler.heads)


def test_round_trip_without_heads(models, tmp_path):
    loaded = load_model(save_model(models["none"], tmp_path / "none.pt"))
    assert loaded.handler is None and loaded.history == []
    assert loaded.settings.unlearning.method == "none"
    assert _same_state(loaded.network, models["none"].network)


def test_a_different_network_is_refused_with_every_mismatch(models, tmp_path):
    path = save_model(models["none"], tmp_path / "none.pt")
    content = torch.load(path, weights_only=True)
    other = BrainAgeRegressor(channels=(8, 8, 8, 16), feature_dim=FEATURES)
    content["network"] = other.state_dict()
    torch.save(content, tmp_path / "other.pt")
    with pytest.raises(HarmonizeError) as info:
        load_model(tmp_path / "other.pt")
    message = str(info.value)
    assert str(tmp_path / "other.pt") in message
    assert "do not fit the BrainAgeRegressor its settings describe (channels=(8, 8, 8, 8)" in message
    assert "shape mismatch for encoder.block3.0.conv.weight: file [16, 8, 3, 3, 3], this network [8, 8, 3, 3, 3]" \
        in message
    content["network"] = {k: v for k, v in models["none"].network.state_dict().items() if "regressor" not in k}
    torch.save(content, tmp_path / "partial.pt")
    with pytest.raises(HarmonizeError, match="missing in the file: regressor.fc.weight"):
        load_model(tmp_path / "partial.pt")


def test_unreadable_and_foreign_files(models, tmp_path):
    with pytest.raises(HarmonizeError, match="does not exist"):
        load_model(tmp_path / "absent.pt")
    good = save_model(models["none"], tmp_path / "none.pt")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(HarmonizeError, match=r"cut\.pt' cannot be read as a PyTorch file: it is damaged"):
        load_model(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello\n")  # 6 bytes: torch.load raised a bare KeyError on it
    with pytest.raises(HarmonizeError, match=r"text\.pt' is not a PyTorch file: it is 6 byte\(s\) long and starts "
                                             r"with b'hello\\n'"):
        load_model(tmp_path / "text.pt")
    torch.save(models["none"].network.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(HarmonizeError, match=r"holds a plain state_dict \(\d+ tensors\), not a harmonize model file"):
        load_model(tmp_path / "plain.pt")
    torch.save({"format": "something else", "x": 1}, tmp_path / "foreign.pt")
    with pytest.raises(HarmonizeError, match=f"not a harmonize model file \\(no format tag '{MODEL_FORMAT}'"):
        load_model(tmp_path / "foreign.pt")
    content = torch.load(good, weights_only=True)
    torch.save({**content, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(HarmonizeError, match="layout version 99; this version of harmonize .* reads version 2. The "
                       r"file was written by harmonize \S+\. Read it with that version, or upgrade harmonize\."):
        load_model(tmp_path / "future.pt")
    torch.save({**content, "version": 1, "harmonize_version": "0.1.0"}, tmp_path / "old.pt")
    with pytest.raises(HarmonizeError, match=r"layout version 1; .* written by harmonize 0\.1\.0\. A version 1 file "
                       r"does not record .* train the model again with this version .* or read the file with "
                       r"harmonize 0\.1\.0\."):
        load_model(tmp_path / "old.pt")
    torch.save({**content, "network_class": "TissueSegmenter"}, tmp_path / "seg.pt")
    with pytest.raises(HarmonizeError, match="holds a 'TissueSegmenter' network"):
        load_model(tmp_path / "seg.pt")


def _bundle(root: Path, network: torch.nn.Module, config_name: str = "inference.json", **ids) -> Path:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    config = {"bundle_root": ".", "network_def": {"_target_": "harmonize.networks.BrainAgeRegressor",
                                                  "channels": list(CHANNELS), "feature_dim": FEATURES}, **ids}
    (root / "configs" / config_name).write_text(json.dumps(config))
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def test_bundle_folder_loads_network_taps_and_site_index(models, tmp_path, tiny_cohort):
    bundle = _bundle(tmp_path / "b", models["none"].network, taps=["encoder.block2", "encoder"])
    model = load_bundle_model(bundle, tiny_cohort)
    assert _same_state(model.network, models["none"].network)
    assert model.settings.taps == ("encoder.block2", "encoder")
    assert model.settings.channels == CHANNELS and model.settings.feature_dim == FEATURES
    assert list(model.site_index) == ["site0", "site1", "site2"]  # rebuilt from the manifest's training rows
    assert model.handler is None and model.history == []
    CategoryIndex(["site0", "site2"]).save(bundle / "models" / "site_index.json")
    assert list(load_bundle_model(bundle, tiny_cohort).site_index) == ["site0", "site2"]  # the bundle's own first


def test_brain_age_bundle_scans_get_the_bundle_transform(models, tmp_path, tiny_cohort):
    """A bundle that trains on intensity-normalised scans is audited on intensity-normalised scans."""
    plain = _bundle(tmp_path / "plain", models["none"].network)
    normalising = _bundle(tmp_path / "norm", models["none"].network,
                          transforms={"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True})
    assert load_bundle_model(plain, tiny_cohort).transform is None
    model = load_bundle_model(normalising, tiny_cohort)
    frame = read_manifest(tiny_cohort)
    features = brain_age_features(model, frame)
    unnormalised = brain_age_features(load_bundle_model(plain, tiny_cohort), frame)
    assert not np.allclose(features.predictions, unnormalised.predictions)
    image = torch.as_tensor(make_dataset(frame[frame[Keys.SPLIT] == "test"].head(1), site_index=model.site_index,
                                         transform=model.transform, allow_unknown_sites=True)[0][Keys.IMAGE])
    inside = image[image != 0]
    assert abs(float(inside.mean())) < 1e-4 and abs(float(inside.std()) - 1.0) < 1e-2


def test_bundle_train_config_default_taps_and_errors(models, tmp_path, tiny_cohort):
    bundle = _bundle(tmp_path / "t", models["none"].network, config_name="train.json",
                     manifest=str(tiny_cohort))
    model = load_bundle_model(bundle)  # site index from the bundle's own 'manifest' id
    assert model.settings.taps == ("encoder",)
    assert list(model.site_index) == list(read_manifest(tiny_cohort).query("split == 'train'").site.unique())
    with pytest.raises(HarmonizeError, match="is not a MONAI bundle folder: none of .*inference.json"):
        load_bundle_model(tmp_path)
    with pytest.raises(HarmonizeError, match="does not exist"):
        load_bundle_model(tmp_path / "absent")
    (bundle / "configs" / "inference.json").write_text(json.dumps({"taps": "encoder"}))
    with pytest.raises(HarmonizeError, match="has no 'network_def' id"):
        load_bundle_model(bundle)
    wrong = {"network_def": {"_target_": "harmonize.networks.BrainAgeRegressor", "channels": [8, 8, 16],
                             "feature_dim": FEATURES}}
    (bundle / "configs" / "inference.json").write_text(json.dumps(wrong))
    with pytest.raises(HarmonizeError) as info:
        load_bundle_model(bundle, tiny_cohort)
    assert "models/model.pt' do not fit the network of 'network_def'" in str(info.value)
    assert "unexpected in the file: encoder.block3.0.conv.weight" in str(info.value)


def test_bundle_taps_and_method_from_its_train_config(models, tmp_path, tiny_cohort):
    bundle = _bundle(tmp_path / "b", models["none"].network)  # inference.json: network_def only
    train = {"taps": ["encoder.block1", "encoder"], "unlearning": {"method": "dann", "beta": 1.0}}
    (bundle / "configs" / "train.json").write_text(json.dumps(train))
    model = load_bundle_model(bundle, tiny_cohort)
    assert model.settings.taps == ("encoder.block1", "encoder")
    assert model.settings.unlearning.method == "dann"
