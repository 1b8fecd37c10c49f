"""Layer ``core``: facts, numerics and the file layouts every stage shares (constants, the
atomic line table, instrument and spectral helpers, dust, PSF matching, HST filters, velocities
by template cross-correlation, the products that pass between stages, the sample sheet).
Nothing here knows about SSP libraries, training sets or networks; it imports no other layer
and never torch."""
