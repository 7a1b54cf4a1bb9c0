"""TrainingCheckpoint: atomic files, exact resume (after a real SIGKILL), refusal of foreign checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from monai.data import Dataset
from monai.engines import SupervisedTrainer
from torch import nn

from harmonize.data.dataset import make_dataloader
from harmonize.errors import ConfigError, HarmonizeError
from harmonize.handlers import (
    Confound,
    DomainUnlearningHandler,
    HeadSteps,
    RefitHeads,
    TrainingCheckpoint,
)
from harmonize.io import TMP_TAG
from harmonize.keys import Keys
from harmonize.networks import DomainHead
from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age

from .conftest import SIDE, TinyNet

#: The brain-age run of the kill test: 12 training scans, 6 per batch -> 2 iterations per epoch, 3 epochs.
EPOCHS = 3
#: The killed run stops (and waits to be killed) after this iteration: mid-way through epoch 2, after the
#: checkpoint of iteration 3 (saved every iteration) and before the one of epoch 2's end.
PAUSE_AT = 4
#: Seconds the test waits for the killed run to reach PAUSE_AT before failing.
START_TIMEOUT = 240

KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import torch
    from ignite.engine import Events

    torch.set_num_threads(1)
    from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
    from harmonize.workflows.unlearning import UnlearningSettings

    manifest, checkpoints, ready = sys.argv[1:4]

    class WaitToBeKilled:
        def attach(self, engine):
            engine.add_event_handler(Events.ITERATION_COMPLETED(once={pause}), self.wait)

        def wait(self, engine):
            Path(ready).write_text(str(engine.state.iteration))
            time.sleep(600)

    settings = BrainAgeSettings(**{settings})
    train_brain_age(manifest, settings, checkpoint_dir=checkpoints, checkpoint_every=1, handlers=[WaitToBeKilled()])
    """
)


def _settings_kwargs() -> dict:
    return {
        "unlearning": {"method": "unlearning", "warmup_epochs": 1, "beta": 1.0},
        "max_epochs": EPOCHS, "channels": (4, 4, 4, 4), "feature_dim": 8, "batch_size": 6,
        "site_agreement": 2.0,  # an age loss with running means: the checkpoint carries them too
    }


def _tensors(model) -> dict[str, torch.Tensor]:
    out = {f"network.{k}": v for k, v in model.network.state_dict().items()}
    out.update({f"heads.{k}": v for k, v in model.handler.heads.state_dict().items()})
    return out


def test_training_killed_mid_epoch_resumes_to_bit_identical_weights(tiny_cohort, tmp_path):
    checkpoints, ready = tmp_path / "checkpoints", tmp_path / "ready"
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN.format(pause=PAUSE_AT, settings=repr(_settings_kwargs())))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_cohort), str(checkpoints), str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the training never reached the iteration to kill it at"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    saved = sorted(p.name for p in checkpoints.iterdir())
    assert saved == [f"checkpoint_epoch{e:04d}_iter{i:08d}.pt" for e, i in ((1, 1), (1, 2), (2, 3))]

    uninterrupted = train_brain_age(tiny_cohort, BrainAgeSettings(**_settings_kwargs()))
    resumed = train_brain_age(tiny_cohort, BrainAgeSettings(**_settings_kwargs()), checkpoint_dir=checkpoints,
                              resume=True, checkpoint_every=1)
    expected, got = _tensors(uninterrupted), _tensors(resumed)
    assert expected.keys() == got.keys() and len(expected) > 20
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert different == []
    # the resumed run went on writing checkpoints: the last 3 are kept, none half-written
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == [f"checkpoint_epoch{e:04d}_iter{i:08d}.pt" for e, i in ((2, 4), (3, 5), (3, 6))]
    assert not any(TMP_TAG in n for n in names)


# ------------------------------------------------------------------------------------ in-process, tiny tensors
def _dataset(n: int = 12, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        site = i % 2
        image = torch.randn(1, SIDE, SIDE, SIDE, generator=g) + site
        items.append({Keys.IMAGE: image, Keys.LABEL: torch.rand(1, generator=g), Keys.SITE: torch.tensor(site)})
    return Dataset(items)


def _run(directory: Path | None, epochs: int = 3, resume: Path | None = None, stop_at: int | None = None,
         every: int | None = 2, hidden: int = 4, keep_last: int = 3, refit: bool = False):
    """A tiny unlearning training (shuffled loader, dropout head, Adam + LR scheduler), optionally checkpointed; with
    ``refit`` the heads are re-fitted on all training batches every epoch (an extra pass over the loader)."""
    torch.manual_seed(0)
    net = TinyNet()
    loader = make_dataloader(_dataset(), batch_size=4, shuffle=True, seed=1)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs, train_data_loader=loader, network=net,
                                optimizer=torch.optim.Adam(net.parameters(), lr=1e-2), loss_function=nn.MSELoss(),
                                decollate=False)
    head = DomainHead(4, 2, hidden=hidden, dropout=0.5)
    adversary = RefitHeads(refit_steps=3, lr=1e-2) if refit else HeadSteps(lr=1e-2)
    unlearn = DomainUnlearningHandler(net, "encoder", Confound(head, num_classes=2), adversary=adversary)
    unlearn.attach(trainer)
    scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=2, gamma=0.5)
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())
    checkpoint = None
    if directory is not None:
        checkpoint = TrainingCheckpoint(directory, {"unlearning": unlearn, "lr_scheduler": scheduler},
                                        every_n_iterations=every, keep_last=keep_last)
        checkpoint.attach(trainer)
    if stop_at is not None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    if resume is not None:
        checkpoint.resume(resume)
    trainer.run()
    return net, unlearn, checkpoint, trainer


def _all_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("refit", [False, True], ids=["head_steps", "refit"])
@pytest.mark.parametrize("stop_at, expected_iteration", [(5, 4), (7, 6)])
def test_resume_from_mid_epoch_and_epoch_end_checkpoints_is_exact(tmp_path, stop_at, expected_iteration, refit):
    reference, ref_unlearn, _, _ = _run(None, refit=refit)  # no checkpoint: nothing sets the sampler's epoch
    _, _, checkpoint, _ = _run(tmp_path, stop_at=stop_at, refit=refit)  # stopped early, as if killed (3 per epoch)
    assert checkpoint.checkpoints()[-1].name.endswith(f"iter{expected_iteration:08d}.pt")
    net, unlearn, _, trainer = _run(tmp_path / "unused", resume=tmp_path, refit=refit)
    assert trainer.state.iteration == 9
    assert _all_equal(reference, net) and _all_equal(ref_unlearn.heads, unlearn.heads)
    ref_opt, opt = ref_unlearn.adversary.optimizer.state_dict()["state"], unlearn.adversary.optimizer.state_dict()["state"]
    assert all(torch.equal(ref_opt[i]["exp_avg"], opt[i]["exp_avg"]) for i in ref_opt)


def test_files_are_atomic_named_and_pruned(tmp_path):
    _, _, checkpoint, _ = _run(tmp_path, every=1, keep_last=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_epoch0003_iter00000008.pt", "checkpoint_epoch0003_iter00000009.pt"]
    state = torch.load(checkpoint.last_saved, weights_only=True)
    assert state["engine"] == {"epoch": 3, "iteration": 9, "epoch_length": 3, "max_epochs": 3}
    assert set(state["objects"]) == {"network", "optimizer", "unlearning", "lr_scheduler"}
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python", "generators"}


def test_checkpoint_of_a_different_network_is_refused(tmp_path):
    _run(tmp_path, epochs=1)
    path = TrainingCheckpoint(tmp_path).checkpoints()[-1]
    with pytest.raises(HarmonizeError, match=f"{path} is a checkpoint of a different network") as err:
        _run(tmp_path / "other", resume=tmp_path, hidden=6)
    assert "shape mismatch for unlearning.heads.site" in str(err.value)
    assert "checkpoint [4, 4], this network [6, 4]" in str(err.value)

    torch.manual_seed(0)
    wider = nn.Sequential(nn.Linear(3, 3))
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[{}], network=wider,
                                optimizer=torch.optim.SGD(wider.parameters(), lr=0.1), loss_function=nn.MSELoss(),
                                epoch_length=1)
    foreign = TrainingCheckpoint(tmp_path, {"unlearning": nn.Linear(1, 1), "lr_scheduler": nn.Linear(1, 1)})
    foreign.attach(trainer)
    with pytest.raises(HarmonizeError, match="different network") as err:
        foreign.resume(path)
    assert "missing in the checkpoint: network.0.weight" in str(err.value)
    assert "unexpected in the checkpoint: network.encoder.0.weight" in str(err.value)


def test_other_setups_and_damaged_files_are_refused(tmp_path):
    _run(tmp_path, epochs=1)
    path = TrainingCheckpoint(tmp_path).checkpoints()[-1]
    net = TinyNet()
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[{}], network=net,
                                optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=nn.MSELoss(),
                                epoch_length=1)
    plain = TrainingCheckpoint(tmp_path / "plain")
    plain.attach(trainer)
    with pytest.raises(HarmonizeError, match=r"different training set-up: it lacks \[\] and holds \['lr_scheduler', "
                                             r"'unlearning'\]"):
        plain.resume(path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(HarmonizeError, match=f"Cannot read checkpoint {truncated}.*delete it to resume from the "
                                             "previous checkpoint"):
        plain.resume(truncated)
    with pytest.raises(HarmonizeError, match="does not exist"):
        plain.resume(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    assert plain.resume(tmp_path / "empty") is None


def test_non_finite_weights_are_never_saved(tmp_path):
    net = TinyNet()
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[{}], network=net,
                                optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=nn.MSELoss(),
                                epoch_length=1)
    checkpoint = TrainingCheckpoint(tmp_path)
    checkpoint.attach(trainer)
    first = checkpoint.save()
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    with pytest.raises(HarmonizeError, match=r"Training diverged at epoch 0, iteration 0: \['network.head.weight'\] "
                                             f"hold NaN or Inf, so no checkpoint was written \\(the last good one is "
                                             f"{first}\\). Lower the learning rate"):
        checkpoint.save()
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_arguments_are_checked():
    with pytest.raises(ConfigError, match=r"'keep_last' must be an integer >= 1, got 0 \(int\)"):
        TrainingCheckpoint("x", keep_last=0)
    with pytest.raises(ConfigError) as info:  # every bad argument at once
        TrainingCheckpoint("x", keep_last=1.5, every_n_iterations=0, prefix="-x")
    assert info.value.message == "TrainingCheckpoint: invalid arguments."
    assert info.value.problems == ["'keep_last' must be an integer >= 1, got 1.5 (float)",
                                   "'every_n_iterations' must be an integer >= 1, got 0 (int); or None (checkpoints at "
                                   "the end of each epoch only)",
                                   "'prefix' must be letters, digits, '_' or '-', got '-x'"]
    with pytest.raises(ConfigError, match="Object 'head' \\(int\\) has no state_dict"):
        TrainingCheckpoint("x", {"head": 3})
    with pytest.raises(ConfigError, match="reserved"):
        TrainingCheckpoint("x", {"network": nn.Linear(1, 1)})
    with pytest.raises(ConfigError, match="not attached"):
        TrainingCheckpoint("x").save()
    net = TinyNet()
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[{}], network=net,
                                optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=nn.MSELoss(),
                                epoch_length=1)
    with pytest.raises(ConfigError, match="every_n_iterations needs a data loader that can start an epoch"):
        TrainingCheckpoint("x", every_n_iterations=2).attach(trainer)
