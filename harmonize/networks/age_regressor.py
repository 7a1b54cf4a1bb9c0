"""VGG-like brain-age regressor of scanner unlearning (Dinsdale, Jenkinson & Namburete 2021)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_act_layer
from torch import nn

from harmonize import defaults
from harmonize.errors import ConfigError, integer_problem, is_integer, number_problem, raise_problems
from harmonize.networks._arguments import channels_problem, dropout_problem, spatial_dims_problem
from harmonize.networks._input import check_image_input

__all__ = ["BrainAgeRegressor"]

#: Convolutions per block in the original network: two in the first three blocks, three in the others.
ORIGINAL_CONVS_EARLY = 2
ORIGINAL_CONVS_LATE = 3
ORIGINAL_EARLY_BLOCKS = 3


class BrainAgeRegressor(nn.Module):
    """A VGG-like 2D/3D encoder to a feature vector, and a small MLP regressor of age.

    The architecture follows the age network of Dinsdale et al. (MICCAI 2020; NeuroImage 2021): blocks of 3x3(x3)
    convolutions with 32-64-64-96-96-96 channels (2, 2, 2, 3, 3, 3 convolutions), max-pooling between blocks, a
    96-d feature vector and a 96-32-1 regressor. The last block is followed by adaptive average pooling to
    ``pooled_size`` voxels per axis (the original flattened a fixed 2x2x1 map), then a linear layer and ReLU to
    ``feature_dim`` features, so any input size works.

    The default normalisation is BatchNorm, as in the original. Per-scan normalisations (GroupNorm,
    InstanceNorm) normalise each scan's activations on their own and so remove the global tissue proportions that
    carry atrophy (measured in docs/unlearning.md). BatchNorm's running statistics pool every site; use batches that hold
    every site (``make_dataloader(..., balance_sites=True)``).

    Max-pooling halves the size ``len(channels) - 1`` times, so every spatial axis must be at least
    ``min_input_size = 2 ** (len(channels) - 1)`` voxels: 32 for the default six blocks (e.g. 32^3 or the
    96x112x96 grid of 2 mm preprocessing).

    Submodules (tap points for :mod:`harmonize.networks.feature_taps`):

    - ``encoder``: image -> ``(batch, feature_dim)`` feature vector (the tap ``encoder`` of :attr:`TAPS`);
    - ``regressor``: features -> ``(batch, 1)``; its hidden layer's activation ``regressor.act`` is the tap
      ``final``, the last features before the output.

    Predictions are in years: the regressor's raw output ``r`` is mapped to ``r * age_scale + age_offset``.
    Set ``age_offset``/``age_scale`` to the training cohort's mean and standard deviation so the untrained
    network predicts the mean age and the raw output stays of order one (better conditioned than regressing
    years directly). Targets stay in years; to keep the task loss of order one as well (so the confusion
    weight ``beta`` means the same whatever the unit), use
    :class:`~harmonize.losses.StandardisedMSELoss` with ``scale=age_scale`` rather than a plain MSE in
    years^2. Both are buffers, saved in the ``state_dict``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        channels: output channels of each convolution block (two blocks or more).
        convs_per_block: convolutions in each block: an int for all, a sequence with one entry per block, or
            ``None`` for the original pattern (two in the first three blocks, three after).
        feature_dim: size of the feature vector.
        hidden: width of the regressor's hidden layer.
        pooled_size: voxels per axis after the final adaptive average pooling.
        norm: MONAI normalisation spec (e.g. ``("group", {"num_groups": 8})``, ``"batch"``, ``"instance"``).
        act: MONAI activation spec.
        dropout: dropout probability in the convolution blocks.
        age_offset: added to the raw output (years).
        age_scale: multiplies the raw output (years), > 0.

    Raises:
        ConfigError: (a ``ValueError``) an argument outside its range, or channels that the normalisation
            cannot group (the argument is named).
    """

    #: Tap name -> name of the submodule whose output is the tapped feature.
    TAPS: dict[str, str] = {"encoder": "encoder", "final": "regressor.act"}

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        channels: Sequence[int] = defaults.AGE_CHANNELS,
        convs_per_block: int | Sequence[int] | None = None,
        feature_dim: int = defaults.AGE_FEATURE_DIM,
        hidden: int = defaults.AGE_HIDDEN,
        pooled_size: int = 1,
        norm: str | tuple = defaults.AGE_NORM,
        act: str | tuple = defaults.AGE_ACT,
        dropout: float = 0.0,
        age_offset: float = 0.0,
        age_scale: float = 1.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        problems = [spatial_dims_problem(spatial_dims), channels_problem(channels)]
        problems += [integer_problem(arg, value) for arg, value in (("in_channels", in_channels),
                     ("feature_dim", feature_dim), ("hidden", hidden), ("pooled_size", pooled_size))]
        problems += [dropout_problem(dropout), number_problem("age_offset", age_offset, minimum=-math.inf),
                     number_problem("age_scale", age_scale)]
        blocks = 0 if problems[1] else len(tuple(channels))  # the blocks convs_per_block counts
        if convs_per_block is None:
            convs = tuple(ORIGINAL_CONVS_EARLY if i < ORIGINAL_EARLY_BLOCKS else ORIGINAL_CONVS_LATE
                          for i in range(blocks))
        else:
            convs = ((convs_per_block,) * blocks if is_integer(convs_per_block)
                     else tuple(convs_per_block) if isinstance(convs_per_block, Iterable) else ())
            if blocks and (len(convs) != blocks or not all(is_integer(c) and c >= 1 for c in convs)):
                problems.append(f"'convs_per_block' must be an integer >= 1 or one per block ({blocks} blocks), "
                                f"got {convs_per_block!r}")
        raise_problems(name, problems)
        channels = tuple(int(c) for c in channels)

        self.spatial_dims = spatial_dims
        self.in_channels = int(in_channels)
        self.channels = channels
        self.feature_dim = int(feature_dim)
        #: Smallest size of every spatial axis of the input.
        self.min_input_size = 2 ** (len(channels) - 1)
        #: Tap name -> number of features (channels) of that tap.
        self.tap_channels: dict[str, int] = {"encoder": self.feature_dim, "final": int(hidden)}

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = self.in_channels
        try:
            for i, (out_ch, n_convs) in enumerate(zip(channels, convs)):
                block = nn.Sequential(
                    *[
                        Convolution(
                            spatial_dims, in_ch if j == 0 else out_ch, out_ch, kernel_size=3, act=act, norm=norm,
                            dropout=dropout or None, adn_ordering="NDA", bias=False,
                        )
                        for j in range(n_convs)
                    ]
                )
                layers[f"block{i}"] = block
                if i < len(channels) - 1:
                    layers[f"pool{i}"] = Pool[Pool.MAX, spatial_dims](kernel_size=2)
                in_ch = out_ch
        except ValueError as err:  # e.g. GroupNorm: channels not divisible by num_groups
            raise ConfigError(f"{name}: norm={norm!r} does not fit channels={channels!r}: {err}") from err
        layers["global_pool"] = Pool[Pool.ADAPTIVEAVG, spatial_dims](pooled_size)
        layers["flatten"] = nn.Flatten(1)
        layers["embed"] = nn.Linear(channels[-1] * pooled_size**spatial_dims, self.feature_dim)
        layers["embed_act"] = get_act_layer(act)
        self.encoder = nn.Sequential(layers)
        self.regressor = nn.Sequential(
            OrderedDict(
                fc=nn.Linear(self.feature_dim, int(hidden)),
                act=get_act_layer(act),
                out=nn.Linear(int(hidden), 1),
            )
        )
        self.register_buffer("age_offset", torch.tensor(float(age_offset)))
        self.register_buffer("age_scale", torch.tensor(float(age_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict age in years.

        Args:
            x: images ``(batch, in_channels, *spatial)`` with every spatial axis >= :attr:`min_input_size`.

        Returns:
            Ages ``(batch, 1)``.

        Raises:
            ValueError: the input's shape does not fit (the shape and the requirement are named).
        """
        if not torch.jit.is_scripting():  # the check is Python only; TorchScript skips it
            check_image_input(self, x, "blocks")
        return self.predict_from_features(self.encoder(x))

    def predict_from_features(self, features: torch.Tensor) -> torch.Tensor:
        """Ages ``(batch, 1)`` in years from encoder features ``(batch, feature_dim)``.

        Used to predict from harmonised features (e.g. after ComBat), bypassing the encoder.
        """
        return self.regressor(features) * self.age_scale + self.age_offset
