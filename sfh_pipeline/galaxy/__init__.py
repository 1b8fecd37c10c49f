"""Layer ``galaxy``: real and mock galaxies through the stages observe (PHANGS and SDSS inputs,
HST on the MUSE grid, binning), infer (spectra of the bins, tiled prediction), maps and validate
(full-grid pPXF references and their agreement with the network). The top layer below the
command line: it may import every other layer."""
