"""Regression pins: short runs of every kept recipe give the figures recorded for them.

``unlearning_pins.json`` holds, per CPU vendor, each run's per-epoch history (task, domain, confusion losses, head
and re-fit accuracies, the gate's evidence) and the sums of the network's and the heads' absolute weights on the tiny
cohorts. Same seeds must give the same figures: a change that moves code, not arithmetic, keeps them. CPUs of
another vendor order floating-point sums differently, and three epochs grow that to about 1 %, so each vendor has its
own pins; a run without pins for this machine's vendor is skipped (record them with ``python
tests/workflows/test_unlearning_pins.py``, from a commit whose figures you trust). The ``GenuineIntel`` pins were
recorded at commit 0e242bc, before the handler's redesign (#18), which kept them; its re-fit runs were dropped when
session 12 changed what the re-fit trains on (the sampler fix, the evidence gate), and the ``AuthenticAMD`` pins were
recorded then.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from harmonize.workflows.brain_age import BrainAgeSettings, train_brain_age
from harmonize.workflows.unlearning import UnlearningSettings

PINS_FILE = Path(__file__).parent / "unlearning_pins.json"
CHANNELS = (8, 8, 8, 8)
RTOL = 1e-5


def _settings(unlearning: UnlearningSettings, **kwargs) -> BrainAgeSettings:
    # the output layer's re-fit and the default taps (defaults.AGE_TAPS) came later than the pins: they pin the
    # training itself, on the feature vector unless a run names its taps
    kwargs.setdefault("taps", ("encoder",))
    return BrainAgeSettings(unlearning=unlearning, max_epochs=3, channels=CHANNELS, feature_dim=16, batch_size=6,
                            refit_output=False, **kwargs)


#: name -> (cohort, settings): the re-fit recipe (two confounds, two taps; biased with pairwise overlap and half the
#: ages labelled), DANN (plain; on an overlap range with a continuous confound), the paper's fused and alternating loops.
RUNS = {
    "refit": ("plain", lambda: _settings(
        UnlearningSettings.refit_adversary(warmup_epochs=1, head_refit_steps=20, confounds=("site", "sex"),
                                           evidence_margin=None),  # its gate, at 0.05, sits on the tiny cohort's edge
        taps=("encoder.block3", "encoder"))),
    "refit_biased": ("biased", lambda: _settings(
        UnlearningSettings.refit_adversary(warmup_epochs=1, head_refit_steps=20, overlap_only=True,
                                           overlap_mode="pairs"), labelled_fraction=0.5)),
    "dann": ("plain", lambda: _settings(UnlearningSettings.dann(reversal_weight=1.0, warmup_epochs=1))),
    "dann_overlap": ("plain", lambda: _settings(UnlearningSettings.dann(
        reversal_weight=1.0, warmup_epochs=1, overlap_only=True, overlap_range=(40.0, 72.0),
        confounds=("site", "age")))),
    "paper": ("plain", lambda: _settings(UnlearningSettings.paper(beta=1.0, warmup_epochs=1, head_steps=2))),
    "alternating": ("plain", lambda: _settings(
        UnlearningSettings.paper(beta=1.0, warmup_epochs=1, mode="alternating"))),
}


def _weight_sum(parameters) -> float:
    return float(sum(p.detach().double().abs().sum() for p in parameters))


def cpu_vendor() -> str:
    """The CPU's vendor (``GenuineIntel``, ``AuthenticAMD``, ...), or the platform's processor name."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def figures(name: str, tiny_cohort: Path, tiny_cohort_biased: Path) -> dict:
    """One run's history and weight sums (what the pins hold)."""
    cohort, settings = RUNS[name]
    model = train_brain_age(tiny_cohort if cohort == "plain" else tiny_cohort_biased, settings())
    return {"history": model.history, "param_sum": _weight_sum(model.network.parameters()),
            "head_sum": _weight_sum(model.handler.heads.parameters())}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_recipe_gives_the_pinned_figures(name, tiny_cohort, tiny_cohort_biased):
    vendor = cpu_vendor()
    pinned = json.loads(PINS_FILE.read_text()).get(vendor, {}).get(name)
    if pinned is None:
        pytest.skip(f"no pins of run {name!r} for CPU vendor {vendor!r}")
    run = figures(name, tiny_cohort, tiny_cohort_biased)
    assert len(run["history"]) == len(pinned["history"])
    for got, want in zip(run["history"], pinned["history"]):
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=RTOL, abs=1e-7), key
    assert run["param_sum"] == pytest.approx(pinned["param_sum"], rel=RTOL)
    assert run["head_sum"] == pytest.approx(pinned["head_sum"], rel=RTOL)


if __name__ == "__main__":  # record this machine's pins: python tests/workflows/test_unlearning_pins.py
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import torch

    from harmonize.data.synth import generate_cohort
    from tests.conftest import TINY_BIASED_CONFIG, TINY_CONFIG

    torch.set_num_threads(1)  # as the suite runs (tests/conftest.py)
    with tempfile.TemporaryDirectory() as tmp:
        plain, biased = (generate_cohort(Path(tmp) / name, config)
                         for name, config in (("plain", TINY_CONFIG), ("biased", TINY_BIASED_CONFIG)))
        recorded = {name: figures(name, plain, biased) for name in RUNS}
    pins = json.loads(PINS_FILE.read_text())
    pins[cpu_vendor()] = recorded
    PINS_FILE.write_text(json.dumps(pins, indent=1) + "\n")
    print(f"pins of {sorted(recorded)} recorded for {cpu_vendor()} in {PINS_FILE}")
