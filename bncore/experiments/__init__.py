"""The experiment machinery: data, nets, training, probes and the simulations of each chapter.

===========================  ==========================================================
module                       what it holds
===========================  ==========================================================
:mod:`.runtime`              the device, seeds and progress bars (chosen in one place)
:mod:`.data`                 digits, a Gaussian mixture and a teacher network
:mod:`.nets`                 MLP and ConvNet with a choice of normalization
:mod:`.train`                one deterministic training loop with probes
:mod:`.diagnostics`          activation percentiles, drift and Santurkar's ICS measure
:mod:`.grid`                 one runner over settings × seeds, standard errors
:mod:`.landscape`            loss-landscape probes along the gradient
:mod:`.landscape_trace`      probes over a training run; the smoothing simulator
:mod:`.lr_sweep`             final accuracy over learning rates and seeds
:mod:`.log_ratio`            "a is k times b" over paired seeds, with its interval
:mod:`.bn_curvature`         gradient and curvature through one BN layer (Thm 4.1, 4.2)
:mod:`.explosion`            gradient explosion at initialization, simulated
:mod:`.depth_sweep`          trainability of plain BN MLPs over depth
:mod:`.eval_gap`             train/eval gap of trained MLPs, recalibration (Alg. 2)
:mod:`.resnets`              residual networks: BN, SkipInit, Fixup, NF
:mod:`.signal_prop`          signal propagation through residual networks
:mod:`.gdnp_least_squares`   GDNP and GD on least squares
:mod:`.gdnp_halfspace`       GDNP and GD for learning a halfspace, bisection
:mod:`.gdnp_rates`           GDNP against GD, measured rates beside the theory's
:mod:`.scale_invariant_sgd`  SGD on a linear layer before BN: scale invariance
:mod:`.convergence`          fitted linear rates, iterations to a tolerance
:mod:`.distributed`          k local processes joined by torch.distributed, with timeouts
:mod:`.data_parallel`        SyncBN's live job, its bytes, accuracy synced or not
:mod:`.population_stats`     EMA against PreciseBN after a high learning rate; FrozenBN
:mod:`.batched_mlp`          K small MLPs trained at once (ghost BN, dropout, per-model η, λ)
:mod:`.lr_init_grid`         the learning rate × init scale grid, with and without BN
:mod:`.regularization`       ghost batch size and dropout against the generalization gap
:mod:`.dropout_shift`        dropout before BN: variance shift and its accuracy cost
:mod:`.wd_equilibrium`       weight norms under SGD with weight decay, time averages
:mod:`.training_probes`      saturation, activation histograms, update-to-data ratios
:mod:`.bench`                every batch norm timed against torch's kernel, bytes moved
===========================  ==========================================================
"""
