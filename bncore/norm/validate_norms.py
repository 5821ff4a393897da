"""Input checks of group, layer and instance norm, in the manner of :mod:`bncore.norm.validate`.

The exception type and the first words of each message are torch's (2.13); what follows says what
to change. The checks of dtype and eps are :mod:`bncore.norm.validate`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "check_group_input",
    "check_groups",
    "check_instance_input",
    "check_layer_input",
    "check_values_per_set",
]


def check_groups(num_channels: int, num_groups: int) -> None:
    """``ValueError`` at construction unless G divides C (torch's rule and words)."""
    if num_groups <= 0 or num_channels % num_groups != 0:
        raise ValueError(
            f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups}); "
            f"each group holds C/G channels, so choose G among the divisors of {num_channels}"
        )


def check_values_per_set(count: int, shape: Sequence[int], what: str) -> None:
    """``ValueError`` when a statistic would be taken over a single value (σ² = 0, x̂ = 0)."""
    if count == 1:
        raise ValueError(
            f"Expected more than 1 {what} when training, got input size {list(shape)}; a "
            "variance needs at least two values, so give the input more of them"
        )


def check_group_input(shape: Sequence[int], num_groups: int, num_channels: int) -> None:
    """``RuntimeError`` for fewer than 2 dims or a channel count that is not the layer's."""
    if len(shape) < 2:
        raise RuntimeError(
            f"Expected at least 2 dimensions for input tensor but received {len(shape)}; "
            "group norm expects (N, C, *spatial)"
        )
    channels = shape[1]
    if channels != num_channels:
        raise RuntimeError(
            f"Expected weight to be a vector of size equal to the number of channels in input, "
            f"but got weight of shape [{num_channels}] and input of shape {list(shape)}; build "
            f"the layer with num_channels={channels} or fix the input's layout (channels on dim 1)"
        )
    check_values_per_set(shape[0] * channels // num_groups * math.prod(shape[2:]), shape,
                         "value per channel")


def check_layer_input(shape: Sequence[int], normalized_shape: Sequence[int]) -> None:
    """``RuntimeError`` unless the input's trailing dimensions are ``normalized_shape``."""
    k = len(normalized_shape)
    if len(shape) < k or tuple(shape[len(shape) - k:]) != tuple(normalized_shape):
        raise RuntimeError(
            f"Given normalized_shape={list(normalized_shape)}, expected input with shape "
            f"[*, {', '.join(map(str, normalized_shape))}], but got input of size{list(shape)}; "
            "layer norm normalizes the trailing dimensions, so they must equal normalized_shape"
        )


def check_instance_input(
    ndim: int, ranks: Sequence[int], module: str, channels: int, num_features: int,
    affine: bool,
) -> bool:
    """``ValueError`` for a wrong rank, or a channel count that is not the layer's when affine.

    Returns whether the channel count matches (without γ, β torch only warns).
    """
    if ndim not in ranks:
        raise ValueError(
            f"expected {' or '.join(f'{r}D' for r in ranks)} input (got {ndim}D input); "
            f"{module} takes (N, C, *spatial), or (C, *spatial) without the batch axis"
        )
    if channels != num_features and affine:
        raise ValueError(
            f"expected input's size at dim={ndim - ranks[0]} to match num_features "
            f"({num_features}), but got: {channels}; build the layer with "
            f"num_features={channels} or fix the input's layout"
        )
    return channels == num_features
