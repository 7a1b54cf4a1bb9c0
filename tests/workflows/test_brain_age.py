"""train_brain_age on the tiny cohort: every method trains, streams, resumes and refuses bad settings."""

from __future__ import annotations

import pytest
import torch

from harmonize.data.manifest import read_manifest
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.keys import Keys
from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
from harmonize.workflows.unlearning import UnlearningSettings

from .conftest import brain_age_settings as _settings


def test_unlearning_changes_the_network_and_logs_history(trained_brain_age):
    none, unlearned = trained_brain_age["none"], trained_brain_age["unlearning"]
    assert none.handler is None and none.history == []
    assert [h["epoch"] for h in unlearned.history] == [1.0, 2.0]
    assert "confusion_loss_site" in unlearned.history[-1]
    assert "confusion_loss_site" not in unlearned.history[0]  # the warm-up epoch trains the heads only
    diffs = [not torch.equal(a, b) for a, b in zip(none.network.parameters(), unlearned.network.parameters())]
    assert any(diffs)


def test_streaming_from_a_disk_cache_with_loader_workers_trains_the_same_network(trained_brain_age, tiny_cohort, tmp_path):
    settings = _settings("none", cache="disk", cache_dir=str(tmp_path / "cache"), cache_limit_gb=0.0005,
                         num_workers=2)
    model = train_brain_age(tiny_cohort, settings)
    assert 0 < len(list((tmp_path / "cache").glob("*.pt"))) < 12  # 0.5 MiB holds some of the 12 training scans
    for name, value in trained_brain_age["none"].network.state_dict().items():
        torch.testing.assert_close(model.network.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_semi_supervised_run_trains(tiny_cohort):
    model = train_brain_age(tiny_cohort, _settings("unlearning", labelled_fraction=0.25))
    assert all(torch.isfinite(p).all() for p in model.network.parameters())


def test_a_used_checkpoint_folder_is_refused_without_resume(tiny_cohort, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "checkpoint_epoch0001_iter00000002.pt").write_bytes(b"old run")
    with pytest.raises(HarmonizeError, match=f"checkpoint_dir {used} is not empty.*Pass resume=True"):
        train_brain_age(tiny_cohort, _settings("none"), checkpoint_dir=used)
    with pytest.raises(ConfigError, match="resume=True needs checkpoint_dir"):
        train_brain_age(tiny_cohort, _settings("none"), resume=True)
    assert (used / "checkpoint_epoch0001_iter00000002.pt").read_bytes() == b"old run"


class _Diverge:
    """Sets the network's weights to Inf after the first iteration, as a diverging optimiser step does."""

    def attach(self, engine) -> None:
        from ignite.engine import Events

        @engine.on(Events.ITERATION_COMPLETED(once=1))
        def _blow_up(engine) -> None:
            with torch.no_grad():
                next(engine.network.parameters()).fill_(float("inf"))


def test_a_nan_task_loss_stops_training_with_a_hint(tiny_cohort, tmp_path):
    # the settings refuse an infinite learning rate (test_every_bad_setting_is_named_at_once): the step diverges here
    with pytest.raises(HarmonizeError, match=r"The task loss \(age\) is nan at iteration 2 \(epoch 1, batch 2 of 2\).*"
                                             r"The network's weights already hold NaN or Inf \(the previous step "
                                             r"diverged\): lower the learning rate \(now 0.001\)"):
        train_brain_age(tiny_cohort, _settings("unlearning", lr=1e-3), checkpoint_dir=tmp_path / "ck",
                        handlers=[_Diverge()])
    assert not (tmp_path / "ck").exists()  # no checkpoint of the diverged weights


def test_a_finished_run_resumes_to_nothing_left(tiny_cohort, tmp_path):
    first = train_brain_age(tiny_cohort, _settings("unlearning"), checkpoint_dir=tmp_path / "ck", resume=True)
    again = train_brain_age(tiny_cohort, _settings("unlearning"), checkpoint_dir=tmp_path / "ck", resume=True)
    assert all(torch.equal(a, b) for a, b in zip(first.network.state_dict().values(),
                                                 again.network.state_dict().values()))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint_epoch0001_iter00000002.pt", "checkpoint_epoch0002_iter00000004.pt"]


def test_training_rows_without_ages_are_refused(tiny_cohort):
    frame = read_manifest(tiny_cohort)
    frame.loc[frame[Keys.SPLIT] == "train", Keys.AGE] = float("nan")
    with pytest.raises(HarmonizeError, match=f"No 'train' row of {tiny_cohort} has an age \\(12 training rows\\): "
                                             "brain-age training needs the 'age' column filled in"):
        train_brain_age(frame, _settings("none"))


def test_text_sites_of_a_bare_frame_need_a_site_index(tiny_cohort):
    """Text site names are mapped through the site index; a frame that names no file has nowhere to keep one."""
    from harmonize.data.site_index import CategoryIndex

    frame = read_manifest(tiny_cohort)
    frame.attrs.clear()
    settings = BrainAgeSettings(unlearning=UnlearningSettings(method="unlearning"), max_epochs=1, channels=(4, 4),
                                feature_dim=8, batch_size=3, cache=False, augment=False)
    with pytest.raises(HarmonizeError, match=r"pass site_index=<path> or a SiteIndex"):
        train_brain_age(frame, settings)
    model = train_brain_age(frame, settings, site_index=CategoryIndex(["site2", "site0", "site1"]))
    assert list(model.site_index) == ["site2", "site0", "site1"] and model.inputs["standardised"] is None
    assert model.inputs["shape"] == [24, 24, 24]


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        BrainAgeSettings(max_epochs=0, batch_size="8", lr=float("inf"), channels=(8, 0), feature_dim=2.5, taps=(),
                         labelled_fraction=1.5, seed=-1, num_workers=1.0, cache="ram", cache_limit_gb=-1)
    assert err.value.message == "BrainAgeSettings: invalid arguments."
    assert err.value.problems == [
        "'max_epochs' must be an integer >= 1, got 0 (int)",
        "'batch_size' must be an integer >= 1, got '8' (str)",
        "'lr' must be a finite number > 0, got inf (float)",
        "'channels' must be a sequence of 1 or more integers >= 1, got (8, 0) (tuple)",
        "'feature_dim' must be an integer >= 1, got 2.5 (float)",
        "'taps' must be a layer name or a sequence of one or more layer names, got () (tuple)",
        "'labelled_fraction' must be a finite number > 0 and <= 1, got 1.5 (float)",
        "'seed' must be an integer >= 0, got -1 (int)",
        "'num_workers' must be an integer >= 0, got 1.0 (float)",
        err.value.problems[9],  # MONAI's message lists the choices as a set, in no fixed order
        "'cache_limit_gb' must be a finite number >= 0 or None, got -1 (int)",
    ]
    assert err.value.problems[9].startswith("Argument 'cache': Unsupported option 'ram', Available options are {")
    assert all(f"'{c}'" in err.value.problems[9] for c in ("memory", "disk", "none"))
    assert err.value.problems[9].endswith("}. (or True: memory, False: none)")
    assert BrainAgeSettings(taps="encoder", channels=[4, 8], cache="disk").taps == ("encoder",)


def test_mixed_precision_needs_a_cuda_device():
    with pytest.raises(ConfigError) as err:
        BrainAgeSettings(amp=True)
    assert err.value.problems == ["'amp' (mixed precision) needs a CUDA device, got device 'cpu'; drop amp on the CPU"]
    assert BrainAgeSettings(amp=True, device="cuda:1").amp  # checked when training starts: resolve_device


def test_final_task_loss_reads_the_last_epoch():
    from harmonize.workflows.brain_age import final_task_loss

    assert final_task_loss([]) is None
    assert final_task_loss([{"task_loss": 0.9}, {"task_loss": 0.4, "domain_acc_site": 0.5}]) == 0.4


def test_site_agreement_beside_an_adversary_is_warned_about(caplog):
    import pandas as pd

    from harmonize.data.site_index import CategoryIndex
    from harmonize.losses import SiteAgreementLoss
    from harmonize.workflows.brain_age import _age_loss

    train = pd.DataFrame({Keys.AGE: [20.0, 40.0, 50.0, 70.0], Keys.SITE: ["a", "a", "b", "b"]})
    index = CategoryIndex(["a", "b"])
    for method, warned in (("none", False), ("unlearning", True)):
        caplog.clear()
        settings = BrainAgeSettings(site_agreement=2.0, unlearning=UnlearningSettings(method=method))
        assert isinstance(_age_loss(settings, train, index, 10.0), SiteAgreementLoss)
        assert ("was measured without an adversary" in caplog.text) is warned
