"""Reading real SDSS spectra: single fibres (the spectra shipped with pPXF's examples) and
spaxels of MaNGA data cubes (the real spaxels shipped with the MaNGA DAP's tests).

Fibres, two layouts: the SDSS DR8 tables that pPXF's examples trimmed (one binary table with
``wavelength`` (vacuum, A), ``flux``, ``inverse_variance``, ``and_mask`` and the redshift in the
header keyword ``Z``) and the DR12 ``spec-*.fits`` layout (``COADD`` with ``loglam``, ``flux``,
``ivar``, ``and_mask``, ``wdisp``; the redshift in ``SPECOBJ``). Fluxes are f_lambda in
1e-17 erg/s/cm^2/A. Wavelengths are returned in air, as the MUSE cubes and the SSP libraries
of this project have them.

MaNGA spaxels (:func:`read_manga_spaxel`), the layout of the DAP's test files: image HDUs
``WAVE`` (vacuum A, log-spaced), ``FLUX``/``IVAR``/``MASK`` (rows = spaxels, f_lambda in
1e-17 erg/s/cm^2/A per spaxel; ``MASK`` the DRP3PIXMASK bits), ``SRES`` (R = lambda/FWHM per
pixel) and ``Z`` (the NSA redshift of each spaxel's galaxy; the spaxel's own velocity differs
by the galaxy's rotation). Neither layout is corrected for Galactic extinction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from ppxf import ppxf_util

#: Instrumental FWHM of SDSS spectra where the file has no ``wdisp`` column (A): the
#: approximation of pPXF's SDSS examples (Cappellari 2017).
SDSS_FWHM_AA = 2.76


@dataclass(frozen=True)
class FibreSpectrum:
    """One observed spectrum. ``wave_aa``: observed-frame air wavelengths of the pixel centres
    (A); ``flux``, ``error``: f_lambda and its 1-sigma error (file units); ``bad``: pixels to
    ignore (no data or flagged bad in every exposure); ``fwhm_aa``: instrumental FWHM per pixel
    (A, observed frame); ``redshift``: the survey's redshift of the galaxy."""

    name: str
    wave_aa: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    bad: np.ndarray
    fwhm_aa: np.ndarray
    redshift: float

    def lsf_fwhm_aa(self, wave_obs_aa):
        """Instrumental FWHM (A) at observed wavelengths (A), the callable that
        :class:`sfh_pipeline.validate.FullGridFit` takes."""
        return np.interp(wave_obs_aa, self.wave_aa, self.fwhm_aa)

    def median_snr(self) -> float:
        """Median S/N per pixel over the good pixels."""
        good = ~self.bad
        return float(np.median(self.flux[good] / self.error[good]))


#: MaNGA DRP3PIXMASK bits that make a pixel unusable: NOCOV, LOWCOV, DEADFIBER, FORESTAR, DONOTUSE.
MANGA_BAD_PIXEL_BITS = (0, 1, 2, 3, 10)
#: HDUs of a file of MaNGA spaxels.
MANGA_HDUS = ("WAVE", "FLUX", "IVAR", "MASK", "SRES", "Z")


def read_spectrum(path, row: int | None = None, name: str | None = None) -> FibreSpectrum:
    """A real spectrum of either layout: the MaNGA spaxel of ``row`` when ``path`` is a file
    of MaNGA spaxels, else the SDSS fibre spectrum (``row`` must then be None)."""
    with fits.open(path) as hdul:
        manga = "WAVE" in hdul and "FLUX" in hdul
    if manga:
        if row is None:
            raise ValueError(f"{path} holds MaNGA spaxels, one per row: say which row")
        return read_manga_spaxel(path, row, name)
    if row is not None:
        raise ValueError(f"{path} is not a file of MaNGA spaxels: it has no rows to choose")
    return read_sdss_spectrum(path, name)


def read_manga_spaxel(path, row: int, name: str | None = None) -> FibreSpectrum:
    """Spaxel ``row`` of a file of MaNGA spaxels (module docstring), with air wavelengths and
    the FWHM of ``SRES``; ValueError naming what is wrong with a file of another layout, a row
    out of range or a spaxel without usable pixels."""
    path = Path(path)
    with fits.open(path) as hdul:
        missing = [h for h in MANGA_HDUS if h not in hdul]
        if missing:
            raise ValueError(f"{path} is not a file of MaNGA spaxels: it lacks the HDUs {', '.join(missing)}")
        vacuum = np.asarray(hdul["WAVE"].data, dtype=float)
        arrays = {h: np.atleast_2d(np.asarray(hdul[h].data)) for h in ("FLUX", "IVAR", "MASK", "SRES")}
        redshifts = np.atleast_1d(np.asarray(hdul["Z"].data, dtype=float))
    n_rows = redshifts.size
    for hdu, values in arrays.items():
        if values.shape != (n_rows, vacuum.size):
            raise ValueError(
                f"{path}: {hdu} has shape {values.shape}, not (spaxels, pixels) = ({n_rows}, {vacuum.size}) "
                "as Z and WAVE say"
            )
    if not 0 <= row < n_rows:
        raise ValueError(f"{path} has spaxels 0-{n_rows - 1}, not {row}")
    flux = arrays["FLUX"][row].astype(float)
    ivar = arrays["IVAR"][row].astype(float)
    resolution = arrays["SRES"][row].astype(float)
    flagged = (arrays["MASK"][row].astype(np.int64) & sum(1 << bit for bit in MANGA_BAD_PIXEL_BITS)) != 0
    bad = ~(ivar > 0) | flagged | ~np.isfinite(flux) | ~(resolution > 0)
    if bad.all():
        raise ValueError(f"{path}: spaxel {row} has no usable pixel (all masked or without inverse variance)")
    with np.errstate(divide="ignore", invalid="ignore"):
        error = np.where(bad, np.nan, 1.0 / np.sqrt(np.where(bad, 1.0, ivar)))
        fwhm_vacuum = vacuum / resolution
    good = ~bad
    # the LSF is smooth: where SRES is unusable, take it from the neighbouring good pixels
    fwhm_vacuum = np.interp(vacuum, vacuum[good], fwhm_vacuum[good])
    air = ppxf_util.vac_to_air(vacuum)
    return FibreSpectrum(
        name=name or f"{path.name.split('.')[0]}-{row}",
        wave_aa=air,
        flux=np.where(bad, np.nan, flux),
        error=error,
        bad=bad,
        fwhm_aa=fwhm_vacuum * air / vacuum,
        redshift=float(redshifts[row]),
    )


def read_sdss_spectrum(path, name: str | None = None) -> FibreSpectrum:
    """The spectrum of an SDSS DR8 (pPXF-trimmed) or DR12 file; see the module docstring."""
    path = Path(path)
    with fits.open(path) as hdul:
        if "COADD" in hdul:
            table = hdul["COADD"].data
            vacuum = 10.0 ** np.asarray(table["loglam"], dtype=float)
            ivar = np.asarray(table["ivar"], dtype=float)
            # wdisp: Gaussian sigma of the LSF in pixels of 1e-4 dex
            fwhm = 2.3548 * np.asarray(table["wdisp"], dtype=float) * vacuum * np.log(10.0) * 1e-4
            redshift = float(hdul["SPECOBJ"].data["Z"][0])
        else:
            hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU) and "wavelength" in h.columns.names), None)
            if hdu is None:
                raise ValueError(
                    f"{path} is not an SDSS spectrum in a layout this reader knows: no COADD table (DR12) "
                    "and no table with a 'wavelength' column (the DR8 tables of pPXF's examples)"
                )
            table = hdu.data
            vacuum = np.asarray(table["wavelength"], dtype=float)
            ivar = np.asarray(table["inverse_variance"], dtype=float)
            fwhm = np.full(vacuum.size, SDSS_FWHM_AA)
            redshift = float(hdu.header["Z"])
        flux = np.asarray(table["flux"], dtype=float)
        and_mask = np.asarray(table["and_mask"], dtype=np.int64)
    bad = ~(ivar > 0) | (and_mask != 0) | ~np.isfinite(flux)
    with np.errstate(divide="ignore"):
        error = np.where(bad, np.nan, 1.0 / np.sqrt(np.where(bad, 1.0, ivar)))
    air = ppxf_util.vac_to_air(vacuum)
    # the air wavelength scales the LSF width too (by < 3e-4)
    return FibreSpectrum(
        name=name or path.stem,
        wave_aa=air,
        flux=np.where(bad, np.nan, flux),
        error=error,
        bad=bad,
        fwhm_aa=fwhm * air / vacuum,
        redshift=redshift,
    )
