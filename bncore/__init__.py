"""bncore: batch normalization in NumPy and PyTorch, and the experiments of the book.

The layers are importable from the top, as in ``torch.nn``::

    from bncore import BatchNorm2d

Everything else lives in one of four groups, one subpackage each; imports flow one way,
``norm`` → ``theory`` → ``experiments`` → ``book``:

- :mod:`bncore.norm`: batch norm itself (statistics, the transform, its backward, inference).
- :mod:`bncore.theory`: closed-form results, one module per paper.
- :mod:`bncore.experiments`: data, nets, training, probes and simulations.
- :mod:`bncore.book`: checked claims, plotting and interactive panels for the pages.

Chapter → module:

======================  =====================================================================
chapter                 modules
======================  =====================================================================
BN in one picture       ``experiments.nets``, ``book.diagrams``
the BN transform        ``norm.numpy_bn``, ``norm.torch_bn``, ``norm.stats``
backprop through BN     ``norm.numpy_bn``, ``norm.torch_bn``, ``norm.gradcheck``, ``norm.jacobian``
training vs inference   ``norm.inference``, ``norm.fold``, ``theory.running``,
                        ``experiments.eval_gap``
covariate shift         ``experiments.nets``, ``experiments.train``, ``experiments.diagnostics``
smoothing               ``experiments.landscape``, ``theory.santurkar``, ``book.static_panels``
gradient explosion      ``experiments.explosion``, ``theory.explosion``, ``book.static_panels``,
                        ``book.explosion_figures``
residual connections    ``experiments.resnets``, ``experiments.signal_prop``, ``theory.residual``,
                        ``book.residual_figures``
length and direction    ``experiments.gdnp_least_squares``, ``theory.kohler``
small batches           ``norm.axis_norm``, ``norm.group_norm``, ``norm.layer_norm``,
                        ``norm.instance_norm``, ``norm.numpy_norms``, ``norm.batch_renorm``,
                        ``norm.ghost_bn``, ``norm.validate_norms``,
                        ``experiments.small_batch``, ``book.small_batch_figures``
across processes        ``norm.sync_bn``, ``norm.merge``, ``norm.precise_bn``, ``norm.frozen_bn``,
                        ``experiments.distributed``, ``experiments.data_parallel``,
                        ``experiments.population_stats``
noise, regularization   ``experiments.batched_mlp``, ``experiments.lr_init_grid``,
                        ``experiments.regularization``, ``experiments.dropout_shift``,
                        ``experiments.wd_equilibrium``, ``experiments.training_probes``,
                        ``theory.variance_shift``, ``theory.weight_decay``
batch norm at speed     ``experiments.bench``, ``norm.fast``, ``norm.fold``
======================  =====================================================================
"""

from bncore.norm.batch_renorm import BatchRenorm1d, BatchRenorm2d
from bncore.norm.frozen_bn import FrozenBatchNorm
from bncore.norm.ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d
from bncore.norm.group_norm import GroupNorm
from bncore.norm.instance_norm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from bncore.norm.layer_norm import LayerNorm
from bncore.norm.precise_bn import precise_bn
from bncore.norm.sync_bn import SyncBatchNorm, convert_sync_batchnorm
from bncore.norm.torch_bn import BatchNorm1d, BatchNorm2d, BatchNorm3d, batch_norm

__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchRenorm1d",
    "BatchRenorm2d",
    "FrozenBatchNorm",
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "SyncBatchNorm",
    "__version__",
    "batch_norm",
    "convert_sync_batchnorm",
    "precise_bn",
]
