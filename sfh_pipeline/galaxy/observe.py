"""The ``observe`` stage of one galaxy: HST bands onto the MUSE grid, S/N map, Voronoi bins.

Products (all under ``results/<galaxy>/observe/``; layouts, writers and readers in
:mod:`sfh_pipeline.products`): ``hst_on_muse.fits`` (the HST bands on the MUSE spaxels),
``bins.fits`` (bin map, S/N, signal and noise) and ``tiles.json`` (the tiles that own bins).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..core.constants import C_KMS
from ..core.products import write_bins, write_hst_on_muse, write_tiles
from ..core.psf import match_psf, pixel_scale_arcsec, reproject_flux
from .extract import bin_geometry
from .phangs import DataError, HstImage, MuseCube, NoOverlap

log = logging.getLogger("sfh_pipeline.observe")  # the name it had before the layer folders

#: MUSE rows of a block of the HST stage: a block's HST pixels (plus the PSF margin) are read,
#: PSF-matched and reprojected together, so that memory does not grow with the mosaic.
HST_BLOCK_ROWS = 64


def hst_on_muse(
    cube_path: str | os.PathLike,
    bands: dict[str, tuple[str, str]],
    muse_psf_fwhm_arcsec: float,
    hst_psf_fwhm_arcsec: float,
    out_path: str | os.PathLike,
) -> dict[str, float]:
    """PSF-match every HST band to the MUSE PSF and reproject it onto the cube's spaxels.

    Parameters
    ----------
    bands : ``{band key: (exp-drc-sci path, err-drc-wht path)}``.
    muse_psf_fwhm_arcsec, hst_psf_fwhm_arcsec : Gaussian PSF FWHMs, arcsec.

    Returns the fraction of spaxels with data per band. A band that does not overlap the
    cube at all is an error; partial coverage leaves NaN where the band has no data (the
    network treats the band as absent there).
    """
    cube = MuseCube.open(cube_path)
    ny, nx = cube.shape
    on_muse = {}
    coverage = {}
    for key, (sci, wht) in bands.items():
        flux, var, pivot = np.full(cube.shape, np.nan), np.full(cube.shape, np.nan), np.nan
        for start in range(0, ny, HST_BLOCK_ROWS):
            rows = slice(start, min(ny, start + HST_BLOCK_ROWS))
            block_wcs, block_shape = cube.wcs[rows, :], (rows.stop - rows.start, nx)
            try:
                # the PSF-matching kernel reaches ~3 FWHM: read that much beyond the block
                image = HstImage.read(key, sci, wht, around=(block_wcs, block_shape, 3.0 * muse_psf_fwhm_arcsec))
            except NoOverlap:
                continue
            smoothed, image_var = match_psf(
                image.flux, image.error**2, pixel_scale_arcsec(image.wcs), hst_psf_fwhm_arcsec, muse_psf_fwhm_arcsec
            )
            flux[rows], var[rows] = reproject_flux(smoothed, image_var, image.wcs, block_wcs, block_shape)
            pivot = image.pivot_aa
        coverage[key] = float(np.isfinite(flux).mean())
        if coverage[key] == 0.0:
            raise DataError(
                f"HST image {sci} ({key}) does not overlap the MUSE cube {cube_path}: "
                "check the files of this galaxy in the sample sheet"
            )
        on_muse[key] = (flux.astype(np.float32), var.astype(np.float32), pivot)
        log.info("%s: %.1f%% of the spaxels covered", key, 100 * coverage[key])
    write_hst_on_muse(out_path, on_muse, cube.wcs.to_header())
    return coverage


def bin_galaxy(
    cube_path: str | os.PathLike,
    systemic_velocity_kms: float,
    settings: dict[str, Any],
    bins_path: str | os.PathLike,
    tiles_path: str | os.PathLike,
) -> dict[str, Any]:
    """S/N map in a rest-frame continuum window, Voronoi binning, and the tiles that own bins.

    ``settings``: ``snr_window_aa`` (rest frame, A), ``target_snr``, ``min_snr`` (spaxels
    below are not binned), ``binning_method``, ``binning_tile_spaxels``, ``tile_spaxels``
    (inference tiles). Returns a summary for the log.
    """
    from .binning import continuum_snr, voronoi_bins

    cube = MuseCube.open(cube_path)
    shift = np.exp(systemic_velocity_kms / C_KMS)
    window = tuple(float(w) * shift for w in settings["snr_window_aa"])
    signal, noise = continuum_snr(cube, window, tile_size=settings["tile_spaxels"])
    if not np.isfinite(signal).any():
        raise DataError(f"{cube_path}: no spaxel has finite data in {window[0]:.0f}-{window[1]:.0f} A")
    binning = voronoi_bins(
        signal,
        noise,
        settings["target_snr"],
        settings["min_snr"],
        method=settings["binning_method"],
        tile_size=settings["binning_tile_spaxels"],
    )
    bin_id = binning.bin_id
    geometry = bin_geometry(bin_id, settings["tile_spaxels"])
    meta = {
        "TARGETSN": (float(settings["target_snr"]), "Voronoi target S/N"),
        "MINSN": (float(settings["min_snr"]), "spaxels below this S/N are not binned"),
        "BINMETH": (binning.method, "binning method"),
        "TILESIZE": (int(settings["tile_spaxels"]), "inference tile size, spaxels"),
    }
    write_bins(
        bins_path,
        bin_id,
        binning.bin_snr,
        signal,
        noise,
        geometry.n_spaxels,
        geometry.owner,
        cube.wcs.to_header(),
        meta,
    )
    tiles = sorted(set(geometry.owner))
    write_tiles(tiles_path, settings["tile_spaxels"], tiles, binning.n_bins)
    return {
        "n_bins": int(binning.n_bins),
        "n_tiles": len(tiles),
        "method": binning.method,
        "binned_spaxels": int((bin_id >= 0).sum()),
    }
