"""bncore: batch normalization in NumPy and PyTorch, and the experiments of the book.

Modules (import the one you need, e.g. ``from bncore.torch_bn import BatchNorm2d``):

- :mod:`bncore.numpy_bn`: the transform, its backward and a module in NumPy.
- :mod:`bncore.torch_bn`: the same as a ``torch.autograd.Function`` with a hand-written,
  twice-differentiable backward, and ``BatchNorm1d/2d/3d`` drop-ins for ``torch.nn``'s.
- :mod:`bncore.stats`: numerically stable per-channel statistics and running averages.
"""

__version__ = "0.1.0"
