"""Reading single SDSS fibre spectra (the real spectra shipped with pPXF's examples).

Two layouts are read: the SDSS DR8 tables that pPXF's examples trimmed (one binary table with
``wavelength`` (vacuum, A), ``flux``, ``inverse_variance``, ``and_mask`` and the redshift in the
header keyword ``Z``) and the DR12 ``spec-*.fits`` layout (``COADD`` with ``loglam``, ``flux``,
``ivar``, ``and_mask``, ``wdisp``; the redshift in ``SPECOBJ``). Fluxes are f_lambda in
1e-17 erg/s/cm^2/A. Wavelengths are returned in air, as the MUSE cubes and the SSP libraries
of this project have them.
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
