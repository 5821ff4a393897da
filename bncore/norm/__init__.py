"""Batch norm itself: the statistics, the transform and its backward, inference and folding.

=========================  ==========================================================
module                     what it holds
=========================  ==========================================================
:mod:`.stats`              per-channel mean and variance (two-pass, Welford, Chan), the
                           running-average rules
:mod:`.validate`           every input check, with messages that say what to fix
:mod:`.numpy_bn`           the transform, its backward and a module, in NumPy
:mod:`.torch_phases`       the phases in torch: statistics, normalize, running update,
                           backward reduce, backward elementwise
:mod:`.torch_bn`           the same as an ``autograd.Function`` and ``BatchNorm1d/2d/3d``
:mod:`.fast`               the training transform fused by ``torch.compile``
:mod:`.inference`          population statistics: running averages, recalibration
:mod:`.fold`               folding BN into the preceding linear or conv layer
:mod:`.gradcheck`          finite differences and relative errors, for checking backwards
:mod:`.jacobian`           one channel's Jacobian: autograd, closed form, spectrum
:mod:`.merge`              Chan's merge of partial statistics, in torch
:mod:`.sync_bn`            batch norm synchronized across processes, and the converter
:mod:`.precise_bn`         PreciseBN: population statistics with the weights frozen
:mod:`.frozen_bn`          FrozenBN: fixed statistics, the same map in training and eval
=========================  ==========================================================
"""
