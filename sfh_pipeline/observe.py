"""The ``observe`` stage of one galaxy: HST bands onto the MUSE grid, S/N map, Voronoi bins.

Products (all under ``results/<galaxy>/observe/``):

* ``hst_on_muse.fits``: per HST band an image HDU ``<BAND>`` (flux per MUSE spaxel,
  photon-weighted mean f_lambda, erg s^-1 cm^-2 A^-1, NaN where the band has no data) and
  ``<BAND>_VAR`` (its variance), on the cube's celestial WCS;
* ``bins.fits``: ``BIN_ID`` (-1 = not binned), ``SNR`` (the bin's S/N painted on its
  spaxels), ``SIGNAL`` and ``NOISE`` (per spaxel, erg s^-1 cm^-2 A^-1) images and a ``BINS``
  table (bin id, S/N, number of spaxels, owner tile);
* ``tiles.json``: the tiles that own at least one bin (one inference job each).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from .atomic import atomic_path, write_json_atomically
from .constants import C_KMS
from .extract import bin_geometry
from .phangs import DataError, HstImage, MuseCube
from .psf import match_psf, pixel_scale_arcsec, reproject_flux

log = logging.getLogger(__name__)


def hst_on_muse(cube_path: str | os.PathLike, bands: dict[str, tuple[str, str]], muse_psf_fwhm_arcsec: float,
                hst_psf_fwhm_arcsec: float, out_path: str | os.PathLike) -> dict[str, float]:
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
    header = cube.wcs.to_header()
    hdus = [fits.PrimaryHDU()]
    coverage = {}
    for key, (sci, wht) in bands.items():
        # the PSF-matching kernel reaches ~3 FWHM: read that much beyond the MUSE field
        image = HstImage.read(key, sci, wht, around=(cube.wcs, cube.shape, 3.0 * muse_psf_fwhm_arcsec))
        smoothed, var = match_psf(image.flux, image.error**2, pixel_scale_arcsec(image.wcs),
                                  hst_psf_fwhm_arcsec, muse_psf_fwhm_arcsec)
        flux, var = reproject_flux(smoothed, var, image.wcs, cube.wcs, cube.shape)
        coverage[key] = float(np.isfinite(flux).mean())
        if coverage[key] == 0.0:
            raise DataError(f"HST image {sci} ({key}) does not overlap the MUSE cube {cube_path}: "
                            "check the files of this galaxy in the sample sheet")
        for name, values, unit in ((key.upper(), flux, "erg/(s cm2 Angstrom)"), (f"{key.upper()}_VAR", var, "erg2/(s2 cm4 Angstrom2)")):
            hdu = fits.ImageHDU(values.astype(np.float32), header=header.copy(), name=name)
            hdu.header["BUNIT"] = unit
            hdu.header["PIVOT"] = (image.pivot_aa, "band pivot wavelength, A")
            hdus.append(hdu)
        log.info("%s: %.1f%% of the spaxels covered", key, 100 * coverage[key])
    with atomic_path(out_path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    return coverage


def read_hst_on_muse(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{band key: (flux, variance, pivot A)}`` images of an ``hst_on_muse.fits`` file."""
    out = {}
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            if not hdu.name.endswith("_VAR"):
                out[hdu.name.lower()] = (np.asarray(hdu.data, float), np.asarray(hdul[f"{hdu.name}_VAR"].data, float),
                                         float(hdu.header["PIVOT"]))
    return out


def bin_galaxy(cube_path: str | os.PathLike, systemic_velocity_kms: float, settings: dict[str, Any],
               bins_path: str | os.PathLike, tiles_path: str | os.PathLike) -> dict[str, Any]:
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
    binning = voronoi_bins(signal, noise, settings["target_snr"], settings["min_snr"],
                           method=settings["binning_method"], tile_size=settings["binning_tile_spaxels"])
    bin_id = binning.bin_id
    geometry = bin_geometry(bin_id, settings["tile_spaxels"])
    header = cube.wcs.to_header()
    snr_map = np.where(bin_id >= 0, np.asarray(binning.bin_snr)[np.clip(bin_id, 0, None)], np.nan)
    images = {"BIN_ID": bin_id.astype(np.int32), "SNR": snr_map.astype(np.float32),
              "SIGNAL": signal.astype(np.float32), "NOISE": noise.astype(np.float32)}
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["TARGETSN"] = (float(settings["target_snr"]), "Voronoi target S/N")
    hdus[0].header["MINSN"] = (float(settings["min_snr"]), "spaxels below this S/N are not binned")
    hdus[0].header["BINMETH"] = (binning.method, "binning method")
    hdus[0].header["TILESIZE"] = (int(settings["tile_spaxels"]), "inference tile size, spaxels")
    for name, data in images.items():
        hdus.append(fits.ImageHDU(data, header=header.copy(), name=name))
    hdus.append(fits.BinTableHDU.from_columns([
        fits.Column("BIN_ID", "J", array=np.arange(binning.n_bins)),
        fits.Column("SNR", "E", array=np.asarray(binning.bin_snr)),
        fits.Column("N_SPAXELS", "J", array=geometry.n_spaxels),
        fits.Column("OWNER", "8A", array=np.asarray(geometry.owner, dtype="U8")),
    ], name="BINS"))
    tiles = sorted(set(geometry.owner))
    with atomic_path(bins_path) as tmp:
        fits.HDUList(hdus).writeto(tmp)
    write_json_atomically(tiles_path, {"tile_spaxels": int(settings["tile_spaxels"]), "tiles": tiles,
                                       "n_bins": int(binning.n_bins)})
    return {"n_bins": int(binning.n_bins), "n_tiles": len(tiles), "method": binning.method,
            "binned_spaxels": int((bin_id >= 0).sum())}


def read_bins(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, fits.Header]:
    """Bin map, per-bin S/N and primary header of a ``bins.fits`` file."""
    with fits.open(path) as hdul:
        return np.asarray(hdul["BIN_ID"].data), np.asarray(hdul["BINS"].data["SNR"], float), hdul[0].header.copy()


def read_tiles(path: str | os.PathLike) -> list[str]:
    return json.loads(Path(path).read_text())["tiles"]
