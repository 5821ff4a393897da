"""Closed-form predictions of batch-norm theory, one module per paper.

Theory lives here, apart from the simulations that test it (:mod:`bncore.experiments`), so that
a chapter can draw one against the other. Every public name is re-exported here, so
``from bncore import theory; theory.gradient_explosion_rate(32)`` reads as the chapters use it.

=========================  =================================================  ===================
module                     result                                             chapter
=========================  =================================================  ===================
:mod:`.santurkar`          gradient and Hessian bounds (Thm 4.1, 4.2)         smoothing
:mod:`.explosion`          gradient explosion rate at initialization          gradient explosion
:mod:`.residual`           residual-stream variance, branch fractions         residual
:mod:`.kohler`             GDNP and gradient-descent convergence rates         length and direction
:mod:`.running`            expected batch variance, EMA fluctuation           training vs inference
:mod:`.variance_shift`     dropout's variance shift before BN (Li et al.)     noise, regularization
:mod:`.weight_decay`       effective learning rate, equilibrium norm          noise, regularization
=========================  =================================================  ===================
"""

from bncore.theory.explosion import (
    RELU_EXPLOSION_LIMIT,
    arccos_kernel,
    gradient_explosion_rate,
    gradient_explosion_rate_large_eps,
    trainable_depth,
)
from bncore.theory.kohler import (
    gd_least_squares_bound,
    gd_least_squares_rate,
    gdnp_asymptotic_rate,
    gdnp_compressed_spectrum,
    kohler_gdnp_bound,
)
from bncore.theory.residual import (
    RESIDUAL_VARIANTS,
    bn_branch_fraction,
    bn_resnet_gradient_growth,
    bn_stream_channel_moments,
    residual_stream_variance,
)
from bncore.theory.running import ema_stationary_variance, expected_batch_variance
from bncore.theory.santurkar import (
    santurkar_grad_bound,
    santurkar_grad_gap,
    santurkar_hessian_bound,
)
from bncore.theory.variance_shift import (
    dropout_linear_variance_shift,
    dropout_train_variance,
    dropout_variance_ratio,
)
from bncore.theory.weight_decay import (
    effective_learning_rate,
    equilibrium_angular_update,
    equilibrium_norm,
    equilibrium_sq_norm,
)

__all__ = [
    "RELU_EXPLOSION_LIMIT",
    "RESIDUAL_VARIANTS",
    "arccos_kernel",
    "bn_branch_fraction",
    "bn_resnet_gradient_growth",
    "bn_stream_channel_moments",
    "dropout_linear_variance_shift",
    "dropout_train_variance",
    "dropout_variance_ratio",
    "effective_learning_rate",
    "ema_stationary_variance",
    "equilibrium_angular_update",
    "equilibrium_norm",
    "equilibrium_sq_norm",
    "expected_batch_variance",
    "gd_least_squares_bound",
    "gd_least_squares_rate",
    "gdnp_asymptotic_rate",
    "gdnp_compressed_spectrum",
    "gradient_explosion_rate",
    "gradient_explosion_rate_large_eps",
    "kohler_gdnp_bound",
    "residual_stream_variance",
    "santurkar_grad_bound",
    "santurkar_grad_gap",
    "santurkar_hessian_bound",
    "trainable_depth",
]
