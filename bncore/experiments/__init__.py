"""The experiment machinery: data, nets, training, probes and the simulations of each chapter.

=========================  ==========================================================
module                     what it holds
=========================  ==========================================================
:mod:`.runtime`            the device, seeds and progress bars (chosen in one place)
:mod:`.data`               digits, a Gaussian mixture and a teacher network
:mod:`.nets`               MLP and ConvNet with a choice of normalization
:mod:`.train`              one deterministic training loop with probes
:mod:`.diagnostics`        activation percentiles, drift and Santurkar's ICS measure
:mod:`.landscape`          loss-landscape probes along the gradient
:mod:`.explosion`          gradient explosion at initialization, simulated
:mod:`.resnets`            residual networks: BN, SkipInit, Fixup, NF
:mod:`.signal_prop`        signal propagation through residual networks
:mod:`.gdnp`               gradient descent in normalized parameterization (GDNP)
=========================  ==========================================================
"""
