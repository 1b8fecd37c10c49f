"""Layer ``synth``: synthetic spectra. The SFH priors, the forward model, the training set, the
mock galaxies, and the quick-look figures of the SSP library, the training set's prior and the
learning curves (``qa``). It imports ``core`` and ``ssp``, never torch."""
