"""Instrument facts: the MUSE line-spread function and the network's spectral grid."""

from __future__ import annotations

import numpy as np

#: Speed of light in km/s.
C_KMS = 299792.458

#: FWHM / sigma of a Gaussian.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))

#: Bacon et al. (2017, A&A 608, A1), eq. 8: MUSE UDF-10 LSF, FWHM(lambda) in Angstrom
#: as a quadratic in lambda (Angstrom). Valid over the MUSE range 4750-9350 A.
MUSE_LSF_UDF10_COEFFS = (5.866e-8, -9.187e-4, 6.040)


def muse_lsf_fwhm_aa(wavelength_aa: np.ndarray) -> np.ndarray:
    """MUSE line-spread function FWHM at the given wavelengths.

    Parameters
    ----------
    wavelength_aa : array_like
        Wavelengths in Angstrom (observed frame, as the LSF is instrumental).

    Returns
    -------
    numpy.ndarray
        FWHM in Angstrom (about 2.9 A at 4800 A and 2.6 A at 7000 A). This is the
        resolution, not the 1.25 A sampling of the cubes.
    """
    a, b, c = MUSE_LSF_UDF10_COEFFS
    lam = np.asarray(wavelength_aa, dtype=float)
    return a * lam**2 + b * lam + c


def linear_grid(start_aa: float, stop_aa: float, step_aa: float) -> np.ndarray:
    """Linear wavelength grid from ``start_aa`` to ``stop_aa`` inclusive, in Angstrom.

    The default network grid (4800-7000 A at 1.25 A) has 1761 pixels, as in the
    released model of Galceran et al. (2026).
    """
    n = int(round((stop_aa - start_aa) / step_aa)) + 1
    return start_aa + step_aa * np.arange(n)
