"""Input validation shared by :mod:`bncore.norm.numpy_bn` and :mod:`bncore.norm.torch_bn`.

Both implementations check their inputs at the public boundary with these functions, so a
bad call fails the same way, with the same message, whichever backend a reader uses. The
exception types and the first words of each message are torch's 2.13 (``RuntimeError:
running_mean should contain 3 elements not 2``, ``ValueError: batch_norm eps must be positive
during training, but got 0``), followed by what to change. The checks run in torch's order: one
value per channel, eps, then the lengths of the per-channel tensors.

One difference is deliberate: a layer with neither γ, β nor running statistics still refuses an
input whose channel count is not its ``num_features`` (``torch.nn`` has nothing to check it
against and accepts it).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BatchNormDTypeError",
    "ChannelMismatchError",
    "check_dtype",
    "check_eps",
    "check_input",
    "check_rank",
    "check_running_stats",
]


class BatchNormDTypeError(TypeError, ValueError, NotImplementedError):
    """A non-floating input: a ``TypeError`` and a ``ValueError``, so either catches it, and
    torch's ``NotImplementedError`` (``"batch_norm" not implemented for 'Long'``).
    """


class ChannelMismatchError(RuntimeError, ValueError):
    """A per-channel array whose length is not the input's channel count.

    A ``RuntimeError`` as in torch, and a ``ValueError`` as bncore documented before.
    """


def check_rank(ndim: int, allowed: Sequence[int], module: str) -> None:
    """Raise ``ValueError`` unless the input rank is one that ``module`` accepts."""
    if ndim not in allowed:
        expected = " or ".join(f"{d}D" for d in allowed)
        raise ValueError(
            f"{module}: expected {expected} input of shape (N, C, *spatial), got {ndim}D input"
        )


def check_dtype(is_floating: bool, dtype: object) -> None:
    """Raise :class:`BatchNormDTypeError` for integer or boolean input."""
    if not is_floating:
        raise BatchNormDTypeError(
            f'"batch_norm" not implemented for this dtype: batch norm needs a floating-point '
            f"input, got dtype {dtype}; "
            "convert it first, e.g. x.float() or x.astype(np.float32)"
        )


def check_eps(eps: float, training: bool) -> None:
    """Raise ``ValueError`` for eps ≤ 0 in training (or eps < 0 anywhere).

    In training a channel whose batch values are all equal has σ_B² = 0, and 1/√(σ_B² + eps) is
    then finite only for eps > 0.
    """
    if eps < 0 or (training and eps == 0):
        rule = "positive during training" if training else "non-negative"
        raise ValueError(
            f"batch_norm eps must be {rule}, but got {eps}; it keeps 1/sqrt(var + eps) finite "
            "for a channel whose values are all equal (the usual value is 1e-5)"
        )


def check_running_stats(has_mean: bool, has_var: bool, training: bool) -> None:
    """Raise ``RuntimeError`` when eval mode has no running statistics to normalize with."""
    if not training and not (has_mean and has_var):
        missing = "running_mean" if not has_mean else "running_var"
        raise RuntimeError(
            f"{missing} must be defined in evaluation mode; pass the running estimates, or "
            "training=True to normalize with the batch's own statistics"
        )


def check_input(
    shape: Sequence[int],
    num_features: int | None,
    eps: float,
    training: bool,
    per_channel: dict[str, int | None] | None = None,
    layer_tensor: str | None = "running_mean",
) -> None:
    """Check an ``(N, C, *spatial)`` input against the expected channel count and mode.

    Parameters
    ----------
    shape
        The input's shape, ``(N, C, *spatial)``.
    num_features
        The expected channel count C of a layer, or ``None`` to accept any.
    eps
        The epsilon added to the variance.
    training
        Whether batch statistics are computed (then each channel needs more than one value).
    per_channel
        Names and lengths of per-channel arrays (``weight``, ``running_mean``...) that must have
        length C; a ``None`` length means the array is absent.
    layer_tensor
        The layer's per-channel tensor that torch finds too long or short first (its message
        names it): ``running_mean`` when the call uses the running statistics, else ``weight``;
        ``None`` when the layer has neither.
    """
    if len(shape) < 2:
        raise ValueError(
            f"batch norm expects input of shape (N, C, *spatial) with at least 2 dimensions, "
            f"got shape {tuple(shape)}"
        )
    values_per_channel = shape[0]
    for s in shape[2:]:
        values_per_channel *= s
    if training and values_per_channel == 1:
        raise ValueError(
            "Expected more than 1 value per channel when training, got input of shape "
            f"{tuple(shape)} (N·∏spatial = 1); a batch variance needs at least two values, so "
            "use a larger batch or call .eval()"
        )
    check_eps(eps, training)
    channels = shape[1]
    if num_features is not None and channels != num_features:
        gist = (f"{layer_tensor} should contain {channels} elements not {num_features}"
                if layer_tensor is not None else
                f"expected input with {num_features} channels, got {channels}")
        raise ChannelMismatchError(
            f"{gist}: the layer was built for {num_features} channels (dim 1), but the input of "
            f"shape {tuple(shape)} has {channels}; build it with num_features={channels} or fix "
            "the input's layout"
        )
    for name, length in (per_channel or {}).items():
        if length is not None and length != channels:
            raise ChannelMismatchError(
                f"{name} should contain {channels} elements not {length}: it needs one entry per "
                f"channel of the input (dim 1 of shape {tuple(shape)})"
            )
