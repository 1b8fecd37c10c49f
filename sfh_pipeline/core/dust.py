"""Dust attenuation curves A(lambda)/A_V for the stellar light.

``calzetti2000`` (the default) is the starburst attenuation law of Calzetti et al. (2000,
ApJ 533, 682, eq. 4, R'_V = 4.05). No maintained PyPI package ships it (``dust_extinction``
has extinction curves only; ``dust_attenuation`` is not on PyPI), so it is written here.
The Milky-Way and Magellanic-Cloud extinction curves of ``dust_extinction`` are offered as
alternatives (``G23``, ``F99``, ``CCM89`` with R_V, ``G03_SMCBar``), and are also what the
Galactic foreground correction of observed spectra uses.
"""

from __future__ import annotations

import numpy as np

CALZETTI_RV = 4.05
DUST_LAWS = ("calzetti2000", "G23", "F99", "CCM89", "G03_SMCBar")


def calzetti2000_k(wavelength_aa: np.ndarray, rv: float = CALZETTI_RV) -> np.ndarray:
    """Calzetti et al. (2000) k'(lambda) = A(lambda)/E_s(B-V) at wavelengths in Angstrom.

    Defined over 1200-22000 A; outside it the two branches are extrapolated (the
    pipeline's library range 1800-10000 A lies inside).
    """
    lam_um = np.asarray(wavelength_aa, dtype=float) / 1e4
    blue = 2.659 * (-2.156 + 1.509 / lam_um - 0.198 / lam_um**2 + 0.011 / lam_um**3) + rv
    red = 2.659 * (-1.857 + 1.040 / lam_um) + rv
    return np.where(lam_um < 0.63, blue, red)


def attenuation_curve(wavelength_aa: np.ndarray, law: str = "calzetti2000", rv: float | None = None) -> np.ndarray:
    """A(lambda) / A_V of dust law ``law`` (one of :data:`DUST_LAWS`) at wavelengths in Angstrom.

    ``rv`` is R_V for the laws that take one (default 4.05 for Calzetti, 3.1 otherwise).
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    if law == "calzetti2000":
        rv = CALZETTI_RV if rv is None else rv
        return calzetti2000_k(lam, rv) / rv
    if law not in DUST_LAWS:
        raise ValueError(f"unknown dust law {law!r} (config key trainset.dust.law): use one of {', '.join(DUST_LAWS)}")
    import astropy.units as u
    from dust_extinction import averages, parameter_averages

    if law == "G03_SMCBar":
        model = averages.G03_SMCBar()
    else:
        model = getattr(parameter_averages, law)(Rv=3.1 if rv is None else rv)
    x = 1e4 / lam  # inverse micron
    lo, hi = model.x_range
    if np.any((x < lo) | (x > hi)):
        raise ValueError(
            f"dust law {law} is defined for {1e4 / hi:.0f}-{1e4 / lo:.0f} A, not all of "
            f"{lam.min():.0f}-{lam.max():.0f} A; choose another law or narrow ssp.wavelength_range_aa"
        )
    return np.asarray(model(x / u.micron), dtype=float)


GALACTIC_RV = 3.1


def galactic_transmission(wavelength_aa: np.ndarray, ebv: float) -> np.ndarray:
    """Fraction of light transmitted by the Milky-Way foreground, F99 with R_V = 3.1.

    ``ebv`` is the Galactic E(B-V) (mag) of the sample sheet; observed fluxes are divided by
    this to correct them.
    """
    if not np.isfinite(ebv) or ebv < 0:
        raise ValueError(f"Galactic E(B-V) must be a non-negative number (sample sheet column ebv_galactic), got {ebv}")
    a_lambda = attenuation_curve(wavelength_aa, "F99", GALACTIC_RV) * GALACTIC_RV * ebv
    return 10.0 ** (-0.4 * a_lambda)


def correct_galactic_extinction(wavelength_aa, ebv: float, *fluxes):
    """``fluxes`` observed at ``wavelength_aa`` (Angstrom, observed frame) corrected for the
    Milky-Way foreground of E(B-V) ``ebv`` (mag, the sample sheet's ``ebv_galactic``): each
    divided by :func:`galactic_transmission` (F99, R_V = 3.1).

    Flux densities and their 1-sigma errors alike, in any unit (the correction is a unitless
    factor per wavelength): spectra with the wavelength on their last axis, or the fluxes of one
    band at its pivot wavelength (a number). Returns the corrected arrays in the order given.
    """
    transmission = galactic_transmission(np.asarray(wavelength_aa, dtype=float), ebv)
    return tuple(np.asarray(flux) / transmission for flux in fluxes)
