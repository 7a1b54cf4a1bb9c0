"""Settings of the reconstruction-unlearning experiment (Xue et al.), nested as data / k-space / unlearning.

:class:`ReconUnlearningSettings` holds what the experiment trains (network, optimiser, epochs of the original and
the oracle, methods, the retain-fraction sweep) and three parts: :class:`ReconDataSettings` (which slices),
:class:`~harmonize.recon.slices.KspaceSettings` (how they are acquired) and :class:`ReconStageSettings` (the
unlearning stages). Every setting is checked on construction; every problem is listed at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from harmonize import defaults
from harmonize.errors import ConfigError, integer_problem, number_problem, raise_problems
from harmonize.handlers.machine_unlearning import stage_problems
from harmonize.keys import NoiseMode, PhantomKind, ReconMethod
from harmonize.losses.ssim_l1 import L1_WEIGHT
from harmonize.networks.reconstruction import UNET_CHANNELS
from harmonize.recon.slices import KspaceSettings

__all__ = [
    "DEFAULT_METHODS",
    "FRACTION_METHODS",
    "NETWORKS",
    "ReconDataSettings",
    "ReconStageSettings",
    "ReconUnlearningSettings",
]

#: Methods run by default, in table order (after the original and the oracle).
DEFAULT_METHODS: tuple[str, ...] = (
    ReconMethod.FT, ReconMethod.GA, ReconMethod.GA_L1, ReconMethod.GA_L1_FT, ReconMethod.NL, ReconMethod.NL_FT,
    ReconMethod.RETRAIN_SUBSET,
)
#: Methods that use the retain fraction (swept for the fraction plot when listed in ``fraction_methods``).
FRACTION_METHODS: tuple[ReconMethod, ...] = (
    ReconMethod.FT, ReconMethod.GA_L1_FT, ReconMethod.NL_FT, ReconMethod.RETRAIN_SUBSET,
)
#: Network choices.
NETWORKS = ("unet", "varnet")


@dataclass
class ReconDataSettings:
    """Which slices: ``size`` (pixels), ``slices_per_volume``, the numbers of volumes of each set and
    ``phantom_kind`` (anatomy-shift scenario: retain = brains, forget = phantoms); or ``manifest`` (+ ``forget_site``)
    for the site scenario."""

    size: int = defaults.RECON_SIZE
    slices_per_volume: int = 4
    retain_train_volumes: int = 40
    forget_train_volumes: int = 8
    retain_test_volumes: int = 8
    forget_test_volumes: int = 8
    phantom_kind: str = PhantomKind.MIXED
    manifest: str | None = None
    forget_site: str | None = None

    def __post_init__(self) -> None:
        raise_problems("ReconDataSettings", self.problems())

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when valid)."""
        return _count_problems(self, ("size", "slices_per_volume"))


@dataclass
class ReconStageSettings:
    """The unlearning stages: ``ga_learning_rate``, epochs of FT, GA and NL, ``retain_fraction`` (paper 10 %, here
    30 %), ``loss_l1_weight`` (the L1 term of the SSIM loss, paper 1e-5), ``l1_penalty`` (GA-L1's weight penalty),
    ``noise_std``/``noise_mode`` (NL), ``loss_ceiling`` (bounds GA), ``forget_with_retain`` (the forget stage of
    GA-L1-FT and NL-FT also descends on the FT's retain subset, with weight ``retain_weight``). The defaults were
    chosen by a sweep at demo size (docs/reconstruction.md)."""

    ga_learning_rate: float | None = defaults.RECON_GA_LEARNING_RATE
    ft_epochs: int = defaults.RECON_FT_EPOCHS
    ga_epochs: int = defaults.RECON_FORGET_EPOCHS
    nl_epochs: int = defaults.RECON_FORGET_EPOCHS
    retain_fraction: float = defaults.RECON_RETAIN_FRACTION
    loss_l1_weight: float = L1_WEIGHT
    l1_penalty: float = defaults.RECON_L1_PENALTY
    noise_std: float = defaults.RECON_NOISE_STD
    noise_mode: str = NoiseMode.ADD
    loss_ceiling: float | None = defaults.RECON_LOSS_CEILING
    forget_with_retain: bool = True
    retain_weight: float = defaults.RECON_RETAIN_WEIGHT

    def __post_init__(self) -> None:
        raise_problems("ReconStageSettings", self.problems())

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when valid)."""
        problems = _count_problems(self, ("ft_epochs", "ga_epochs", "nl_epochs"))
        problems += [p for p in (number_problem("retain_fraction", self.retain_fraction, maximum=1),
                                 number_problem("ga_learning_rate", self.ga_learning_rate, optional=True),
                                 number_problem("loss_l1_weight", self.loss_l1_weight, strict=False)) if p]
        problems += stage_problems(l1_penalty=self.l1_penalty, noise_std=self.noise_std,
                                   loss_ceiling=self.loss_ceiling, retain_weight=self.retain_weight,
                                   noise_mode=self.noise_mode)
        return problems


def _count_problems(settings: Any, names: tuple[str, ...]) -> list[str]:
    """Counts that are not integers >= 1 (a bundle override may bring text, '--max_epochs two': named, not a
    TypeError)."""
    return [p for p in (integer_problem(name, getattr(settings, name)) for name in names) if p]


#: The parts of :class:`ReconUnlearningSettings`, by field.
_PARTS: dict[str, type] = {"data": ReconDataSettings, "kspace": KspaceSettings, "unlearning": ReconStageSettings}


def _nested(cls: type, value: Any) -> Any:
    return cls(**value) if isinstance(value, Mapping) else value


@dataclass
class ReconUnlearningSettings:
    """Every setting of the experiment. Defaults: the demo (64 x 64 slices, 3 seeds; its time: docs/reconstruction.md).

    Args:
        data: which slices (:class:`ReconDataSettings`; a dict is accepted, as in a bundle config).
        kspace: how they are acquired (its ``keep_kspace`` is set from ``network``: VarNet reads the k-space).
        unlearning: the unlearning stages (:class:`ReconStageSettings`).
        network: ``unet`` or ``varnet``; ``channels`` of the U-Net.
        batch_size, learning_rate: the loaders' batch size and Adam's learning rate (paper 1e-3).
        original_epochs, oracle_epochs: training of the original (retain + forget) and the oracle (retain).
        methods: unlearning methods run after the original and the oracle.
        fractions, fraction_methods: the retain-fraction sweep.
        seed: seeds everything; ``seeds``: the experiment runs on ``seed``, ``seed + 1``, ... (``seeds`` of them;
            each builds its own sets and trains its own original and oracle) and reports means with 95 % intervals.
        device, progress: torch device, progress display.

    Raises:
        ConfigError: every setting out of range, listed at once.
    """

    data: ReconDataSettings = field(default_factory=ReconDataSettings)
    kspace: KspaceSettings = field(default_factory=KspaceSettings)
    unlearning: ReconStageSettings = field(default_factory=ReconStageSettings)
    network: str = "unet"
    channels: tuple[int, ...] = UNET_CHANNELS
    batch_size: int = 8
    learning_rate: float = defaults.LEARNING_RATE
    original_epochs: int = 30
    oracle_epochs: int = 30
    methods: tuple[str, ...] = DEFAULT_METHODS
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3)
    fraction_methods: tuple[str, ...] = (ReconMethod.FT, ReconMethod.GA_L1_FT)
    seed: int = 0
    seeds: int = defaults.RECON_SEEDS
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name, part in _PARTS.items():  # a part given as a dict is checked as it is built: its problems join ours
            try:
                setattr(self, name, _nested(part, getattr(self, name)))
            except ConfigError as err:
                problems += err.problems or [err.message]
        self.channels, self.methods = tuple(self.channels), tuple(self.methods)
        self.fractions, self.fraction_methods = tuple(self.fractions), tuple(self.fraction_methods)
        if isinstance(self.kspace, KspaceSettings):  # the caller's is left as it was
            self.kspace = replace(self.kspace, keep_kspace=self.network == "varnet")
        raise_problems("ReconUnlearningSettings", problems + self._own_problems())

    @classmethod
    def demo(cls) -> ReconUnlearningSettings:
        """The settings of ``harmonize demo`` (the defaults)."""
        return cls()

    @classmethod
    def tiny(cls, **changes: Any) -> ReconUnlearningSettings:
        """A few seconds at 32 x 32, one seed: for tests and smoke runs (numbers are not meaningful)."""
        data = ReconDataSettings(size=32, slices_per_volume=2, retain_train_volumes=6, forget_train_volumes=2,
                                 retain_test_volumes=2, forget_test_volumes=2)
        stages = ReconStageSettings(ft_epochs=1, ga_epochs=1, nl_epochs=1, retain_fraction=0.5)
        return cls(**{"data": data, "unlearning": stages, "channels": (8, 16, 32), "batch_size": 4,
                      "original_epochs": 1, "oracle_epochs": 1, "fractions": (0.5, 1.0), "seeds": 1,
                      "fraction_methods": (ReconMethod.FT,), **changes})

    @classmethod
    def benchmark(cls) -> ReconUnlearningSettings:
        """Larger: 200 brain and 20 phantom training volumes (8 slices each), longer training (hours on a CPU)."""
        data = ReconDataSettings(slices_per_volume=8, retain_train_volumes=200, forget_train_volumes=20,
                                 retain_test_volumes=20, forget_test_volumes=20)
        return cls(data=data, unlearning=ReconStageSettings(ft_epochs=18, ga_epochs=3, nl_epochs=3),
                   original_epochs=50, oracle_epochs=50, fractions=(0.02, 0.05, 0.1, 0.2, 0.5),
                   fraction_methods=(ReconMethod.FT, ReconMethod.GA_L1_FT, ReconMethod.NL_FT,
                                     ReconMethod.RETRAIN_SUBSET))

    def check(self) -> None:
        """Raise :class:`~harmonize.errors.ConfigError` listing every setting out of range (run on construction;
        again after a setting was changed)."""
        raise_problems("ReconUnlearningSettings",
                       [p for name in _PARTS for p in getattr(self, name).problems()] + self._own_problems())

    def _own_problems(self) -> list[str]:
        """The problems of the settings outside the data / k-space / unlearning parts."""
        problems = _count_problems(self, ("batch_size", "original_epochs", "oracle_epochs", "seeds"))
        problems += [p for p in (number_problem(f"fractions[{i}]", f, maximum=1) for i, f in enumerate(self.fractions))
                     if p]
        if self.network not in NETWORKS:
            problems.append(f"'network' must be one of {list(NETWORKS)}, got {self.network!r}.")
        for name in ("methods", "fraction_methods"):
            for m in getattr(self, name):
                if m not in ReconMethod.__members__.values() or m in (ReconMethod.ORIGINAL, ReconMethod.ORACLE):
                    problems.append(f"'{name}' holds {m!r}; choose from {[str(x) for x in DEFAULT_METHODS]} "
                                    "(the original and the oracle always run).")
        for m in self.fraction_methods:
            if m in ReconMethod.__members__.values() and m not in FRACTION_METHODS:
                problems.append(f"'fraction_methods' holds {m!r}, which does not use retain data; "
                                f"choose from {[str(x) for x in FRACTION_METHODS]}.")
        return problems

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), e.g. for the JSON record."""
        def plain(v: Any) -> Any:
            if hasattr(v, "__dataclass_fields__"):
                return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
            return list(v) if isinstance(v, tuple) else v
        return plain(self)
