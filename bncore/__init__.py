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
the BN transform        ``norm.numpy_bn``, ``norm.torch_bn``, ``norm.stats``
backprop through BN     ``norm.numpy_bn``, ``norm.torch_bn``, ``norm.gradcheck``, ``norm.jacobian``
training vs inference   ``norm.inference``, ``norm.fold``, ``theory.running``,
                        ``experiments.eval_gap``
covariate shift         ``experiments.nets``, ``experiments.train``, ``experiments.diagnostics``
smoothing               ``experiments.landscape``, ``theory.santurkar``
gradient explosion      ``experiments.explosion``, ``theory.explosion``
residual connections    ``experiments.resnets``, ``experiments.signal_prop``, ``theory.residual``
length and direction    ``experiments.gdnp_least_squares``, ``theory.kohler``
batch norm at speed     ``experiments.bench``, ``norm.fast``, ``norm.fold``
======================  =====================================================================
"""

from bncore.norm.torch_bn import BatchNorm1d, BatchNorm2d, BatchNorm3d, batch_norm

__version__ = "0.1.0"

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "__version__", "batch_norm"]
