"""Mock galaxies written in the exact PHANGS file layouts, with their ground truth.

:func:`write_mock_galaxy` turns one row of the sample sheet and a *recipe* into

* a MUSE cube in the PHANGS-MUSE DR1 layout (empty primary HDU with ``OBJECT``; ``DATA``
  and ``STAT`` (variance) float32 (n_wave, ny, nx) in ``10**(-20)*erg/s/cm**2/Angstrom``;
  linear wavelength axis CRVAL3 = 4749.75 A, CD3_3 = 1.25 A, CRPIX3 = 1, NAXIS3 = 3681,
  i.e. 4749.75-9349.75 A observed frame (CTYPE3 ``AWAV``; the model's air wavelengths are
  used as they are); celestial TAN WCS of 0.2 arcsec spaxels centred on ``ra_deg, dec_deg``);
* one PHANGS-HST HLSP pair per band: ``exp-drc-sci`` (primary image in ``ELECTRONS/S`` with
  PHOTFLAM, PHOTPLAM = the band's pivot wavelength, PHOTFNU, EXPTIME and its own TAN WCS
  of 0.04 arcsec pixels covering the MUSE field plus a 1 arcsec margin, tangent point offset
  from the MUSE one but pixel grid aligned with it, 5 x 5 HST pixels per spaxel) and
  ``err-drc-wht`` (inverse variance of the counts, (e-/s)^-2; 0 where there are no data);
* ``truth.fits`` in the maps-file layout (:func:`sfh_pipeline.products.write_maps`).

The galaxy (a recipe that deliberately differs from the training prior of
:mod:`sfh_pipeline.priors`) is drawn on the spaxel grid; lengths are in units of
``R_field`` = half the smaller side of the field (arcsec), so a mock of any size shows all
its components. In the galaxy plane (inclination and position angle from the row; PA from
north through east to the receding major axis):

* **bulge** — Sersic n = 2 profile of mass formed, SFR ∝ exp(-(t_form - t)/tau) from
  12 Gyr to 10 Gyr lookback (tau = 0.5 Gyr), metal-rich;
* **disc** — exponential, SFR ∝ exp(-(11 Gyr - t)/tau(R)) from 11 Gyr ago to now with
  tau growing outwards (inside-out growth);
* **spiral arms** — two logarithmic arms on the disc with a recent burst
  (SFR ∝ exp(-t/50 Myr) over the last 100 Myr) and extra dust;
* **metallicity** — log Z/Z_sun = logz_center + logz_gradient * R/R_field (bulge: + offset),
  minus an age-metallicity term that reaches ``amr_dex`` for the oldest bins; per bin the
  mass-weighted mean of the components, clipped to the library range;
* **dust** — A_V from ``av_outer`` (outskirts) to ``av_center`` plus ``av_arm_extra`` in the
  arms (Calzetti 2000 law of the forward model), birth-cloud extra for the < 10 Myr bins;
* **kinematics** — v = v_sys + v_max tanh(R/r_t) sin i cos(phi) (stars rotate at
  ``stellar_rotation_fraction`` of the gas), stellar dispersion mixing bulge and disc values
  by mass; the gas has its own small dispersion;
* **emission lines** — Hbeta, [OIII]4959,5007, Halpha, [NII]6548,6583, [SII]6716,6731 at
  the gas velocity; L(Halpha) = ``halpha_erg_s_per_msun_yr`` x SFR averaged over the last
  10 Myr, fixed HII-region line ratios, attenuated by A_V,gas = A_V (1 + birth_cloud_extra);
  width = gas dispersion and MUSE LSF in quadrature, integrated over each pixel.

Units: model fluxes (L_sun/A per M_sun formed) x mass formed per spaxel (surface density
x spaxel area in kpc^2 from ``distance_mpc``) x L_sun (3.828e33 erg/s) / (4 pi D^2). Galactic
extinction (:func:`sfh_pipeline.dust.galactic_transmission`: F99, R_V = 3.1, E(B-V) =
``ebv_galactic``) multiplies the cube at each observed wavelength and every HST band flux at
the band's pivot wavelength. HST band fluxes are the forward model's photon-weighted mean
f_lambda (rest frame: kinematics are ignored in broad bands) plus the emission lines weighted
by the throughput.

Instrument: every plane of the noiseless cube is convolved with a Gaussian of FWHM
``muse_psf_fwhm_arcsec`` (zero outside the field); the HST images are the per-spaxel
(pre-MUSE-PSF) band fluxes spread evenly over the 5 x 5 HST pixels of each spaxel (flux
conserved) and convolved with a Gaussian of ``hst_psf_fwhm_arcsec``. MUSE variance per
pixel = a * flux + b (Poisson + sky), a and b fixed so that the brightest spaxel has
continuum S/N ``snr_center`` and the 10th percentile of the galaxy's spaxels ``snr_edge``
per 1.25 A pixel (at 5400-5600 A rest); if that needs b < 0, b is set to a tenth of the
edge value and a from the centre. HST variance (e-/s)^2 = counts/EXPTIME + background^2.
All noise comes from ``numpy.random.default_rng(seed)`` in a fixed order (MUSE cube, then
the HST bands in ``filters`` order): the same inputs give bit-identical files.

Truth maps describe the PSF-convolved cube: the linear quantities (mass formed per bin,
light per bin in the 5400-5600 A window, their products with log Z, surviving mass) are
convolved with the MUSE PSF and ratios taken, with the light weights of
:func:`sfh_pipeline.trainset.population_averages` (bin age = midpoint). ``BIN_ID`` is the
spaxel index (row-major) where the convolved window light exceeds ``light_floor`` times its
peak, -1 elsewhere (maps NaN there); ``_ERR`` maps (``SFH_ERR`` and ``ZH_ERR`` too) are 0,
``CHI2`` and ``OOD`` NaN, ``SNR`` the expected continuum S/N per pixel, ``MASS_DENSITY``
log10 present-day (surviving) mass per kpc^2 on the sky, ``T50`` / ``T90``
:func:`sfh_pipeline.priors.formation_times` of the spaxel's ``SFH`` planes with the given
age-bin edges (log10 lookback time/yr by which 50 % / 90 % of the mass had formed).

Recipe keys (all but ``seed`` optional; unknown keys are an error)
-------------------------------------------------------------------
=========================== ============= ==================================================
key                         default       meaning
=========================== ============= ==================================================
seed                        (required)    seed of ``numpy.random.default_rng``
size_spaxels                [48, 48]      [ny, nx] of the MUSE field
uncovered_band              None          band key whose HST image lacks the upper-right
                                          quarter (sci = wht = 0, as off a drizzled mosaic)
bulge_re                    0.2           bulge effective radius / R_field
disc_rd                     0.35          disc scale length / R_field
r_trunc                     1.15          truncation radius (galaxy plane) / R_field
log_sigma_bulge             10.5          log10 central bulge mass formed, M_sun/kpc^2 (sky)
log_sigma_disc              9.3           log10 central disc mass formed, M_sun/kpc^2 (sky)
disc_tau_gyr                [5.0, 6.0]    disc SFR e-folding time at R = 0 and its increase
                                          per R_field, Gyr
arm_pitch_deg               20.0          pitch angle of the two logarithmic arms, deg
arm_sharpness               6.0           arm profile ((1 + cos psi) / 2) ** sharpness
arm_mass_fraction           0.03          burst mass / disc mass on an arm's crest
logz_center                 0.1           log Z/Z_sun of the young disc at R = 0
logz_gradient               -0.5          dex per R_field (negative: poorer outside)
bulge_logz_offset           0.15          bulge metallicity above the disc's, dex
amr_dex                     0.4           how much poorer the oldest bins are, dex
av_center, av_outer         0.7, 0.2      A_V at the centre and in the outskirts, mag
av_arm_extra                0.3           extra A_V on the arms, mag (total clipped to 1.2)
birth_cloud_extra           0.5           extra A_V of < 10 Myr stars, in units of A_V
v_max_kms                   180.0         gas rotation amplitude, km/s
r_turn                      0.25          rotation-curve turnover radius / R_field
stellar_rotation_fraction   0.85          stellar / gas rotation amplitude
sigma_bulge_kms             120.0         stellar dispersion of the bulge, km/s
sigma_disc_kms              40.0          stellar dispersion of the disc, km/s
sigma_gas_kms               25.0          gas velocity dispersion, km/s
halpha_erg_s_per_msun_yr    2.0e41        L(Halpha) per unit SFR (Kennicutt 1998 / 0.63,
                                          Chabrier IMF), erg/s per M_sun/yr
snr_center, snr_edge        60.0, 3.5     continuum S/N per pixel, brightest / faint spaxels
light_floor                 1.0e-3        BIN_ID >= 0 above this fraction of peak light
hst_psf_fwhm_arcsec         0.08          HST PSF FWHM, arcsec
hst_pixel_arcsec            0.04          HST pixel, arcsec (0.2 / it must be an integer)
hst_margin_arcsec           1.0           HST coverage beyond the MUSE field, arcsec
hst_exptime_s               1000.0        exposure time for the Poisson term, s
hst_background_e_s          0.004         background noise per HST pixel, e-/s
=========================== ============= ==================================================
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage
import scipy.special
from astropy.convolution import Gaussian1DKernel
from astropy.io import fits
from astropy.wcs import WCS

from ..core.atomic import atomic_path
from ..core.constants import ARCSEC_RAD, C_AA_PER_S, C_KMS, L_SUN_ERG_S, MPC_CM
from ..core.dust import attenuation_curve, galactic_transmission
from ..core.filters import load_throughputs
from ..core.instrument import FWHM_PER_SIGMA, muse_lsf_fwhm_aa
from ..core.products import MAP_HDUS, PRODUCTS, map_planes, write_maps
from ..core.samples import MOCK_GALAXY_COLUMNS
from ..core.spectral import EMISSION_LINES_AA
from ..ssp import load_ssp
from .forward import ForwardModel
from .priors import bin_mass_fractions, formation_times

#: The PHANGS-MUSE DR1 wavelength axis (observed frame, A).
MUSE_CRVAL3, MUSE_CD3_3, MUSE_NAXIS3 = 4749.75, 1.25, 3681
MUSE_SPAXEL_ARCSEC = 0.2
MUSE_BUNIT = "10**(-20)*erg/s/cm**2/Angstrom"
MUSE_UNIT_CGS = 1e-20
NORM_WINDOW_AA = (5400.0, 5600.0)
RECENT_SFR_YR = 1e7

#: Typical inverse sensitivities (erg s^-1 cm^-2 A^-1 per e-/s) of the PHANGS-HST bands
#: (WFC3/UVIS and ACS/WFC instrument handbooks, rounded; a mock needs plausible values only).
PHOTFLAM = {
    "wfc3-uvis_f275w": 3.2e-18,
    "wfc3-uvis_f336w": 1.3e-18,
    "wfc3-uvis_f438w": 6.8e-19,
    "wfc3-uvis_f555w": 1.9e-19,
    "wfc3-uvis_f814w": 1.5e-19,
    "acs-wfc_f435w": 3.1e-19,
    "acs-wfc_f555w": 2.0e-19,
    "acs-wfc_f814w": 7.1e-20,
}

#: Intrinsic HII-region line fluxes relative to Halpha (case B Halpha/Hbeta = 2.86).
LINE_RATIOS = {
    "Hbeta": 1 / 2.86,
    "[OIII]4959": 0.5 / 2.86 / 2.98,
    "[OIII]5007": 0.5 / 2.86,
    "[NII]6548": 0.35 / 3.05,
    "Halpha": 1.0,
    "[NII]6583": 0.35,
    "[SII]6716": 0.12,
    "[SII]6731": 0.09,
}

RECIPE_DEFAULTS: dict[str, Any] = {
    "seed": None,
    "size_spaxels": [48, 48],
    "uncovered_band": None,
    "bulge_re": 0.2,
    "disc_rd": 0.35,
    "r_trunc": 1.15,
    "log_sigma_bulge": 10.5,
    "log_sigma_disc": 9.3,
    "disc_tau_gyr": [5.0, 6.0],
    "arm_pitch_deg": 20.0,
    "arm_sharpness": 6.0,
    "arm_mass_fraction": 0.03,
    "logz_center": 0.1,
    "logz_gradient": -0.5,
    "bulge_logz_offset": 0.15,
    "amr_dex": 0.4,
    "av_center": 0.7,
    "av_outer": 0.2,
    "av_arm_extra": 0.3,
    "birth_cloud_extra": 0.5,
    "v_max_kms": 180.0,
    "r_turn": 0.25,
    "stellar_rotation_fraction": 0.85,
    "sigma_bulge_kms": 120.0,
    "sigma_disc_kms": 40.0,
    "sigma_gas_kms": 25.0,
    "halpha_erg_s_per_msun_yr": 2.0e41,
    "snr_center": 60.0,
    "snr_edge": 3.5,
    "light_floor": 1.0e-3,
    "hst_psf_fwhm_arcsec": 0.08,
    "hst_pixel_arcsec": 0.04,
    "hst_margin_arcsec": 1.0,
    "hst_exptime_s": 1000.0,
    "hst_background_e_s": 0.004,
}


# Bulge and disc star-formation episodes, lookback yr.
BULGE_START_YR, BULGE_STOP_YR, BULGE_TAU_YR = 1.2e10, 1.0e10, 5e8
DISC_START_YR = 1.1e10
ARM_BURST_YR, ARM_TAU_YR = 1e8, 5e7
#: Bins younger than this (yr) have the present-day metallicity; the age-metallicity term
#: grows linearly in log age from here to the bulge's formation (12 Gyr), reaching amr_dex.
AMR_START_YR = 1e8


def resolve_recipe(recipe: Mapping[str, Any], filters=()) -> dict[str, Any]:
    """The recipe with defaults filled in, validated.

    Raises
    ------
    ValueError
        Unknown keys (named), a missing seed, a bad size or an ``uncovered_band`` that is
        not one of ``filters``.
    """
    unknown = sorted(set(recipe) - set(RECIPE_DEFAULTS))
    if unknown:
        raise ValueError(f"mock recipe: unknown keys {unknown}; known keys: {', '.join(sorted(RECIPE_DEFAULTS))}")
    out = {**RECIPE_DEFAULTS, **recipe}
    if out["seed"] is None or isinstance(out["seed"], bool) or not isinstance(out["seed"], (int, np.integer)):
        raise ValueError(f"mock recipe: 'seed' must be an integer, got {out['seed']!r}")
    size = out["size_spaxels"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(n, (int, np.integer)) and n >= 4 for n in size)
    ):
        raise ValueError(f"mock recipe: 'size_spaxels' must be [ny, nx] with integers >= 4, got {size!r}")
    out["size_spaxels"] = [int(size[0]), int(size[1])]
    band = out["uncovered_band"]
    if band is not None and band not in filters:
        raise ValueError(f"mock recipe: uncovered_band {band!r} is not one of the galaxy's bands {list(filters)}")
    ratio = MUSE_SPAXEL_ARCSEC / float(out["hst_pixel_arcsec"])
    if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
        raise ValueError(
            f"mock recipe: hst_pixel_arcsec must divide {MUSE_SPAXEL_ARCSEC} arcsec, got {out['hst_pixel_arcsec']}"
        )
    if len(out["disc_tau_gyr"]) != 2:
        raise ValueError("mock recipe: disc_tau_gyr must be [tau at R=0, increase per R_field] in Gyr")
    for key in (
        "snr_center",
        "snr_edge",
        "bulge_re",
        "disc_rd",
        "r_trunc",
        "r_turn",
        "light_floor",
        "hst_exptime_s",
        "hst_background_e_s",
        "hst_psf_fwhm_arcsec",
    ):
        if not float(out[key]) > 0:
            raise ValueError(f"mock recipe: {key} must be > 0, got {out[key]!r}")
    return out


def _row_values(row) -> dict[str, Any]:
    missing = [c for c in MOCK_GALAXY_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"sample-sheet row lacks columns {missing} (see config/galaxies.tsv)")
    values = {c: row[c] for c in MOCK_GALAXY_COLUMNS}
    for c in MOCK_GALAXY_COLUMNS[1:]:
        values[c] = float(values[c])
    if not values["distance_mpc"] > 0:
        raise ValueError(f"{values['galaxy']}: distance_mpc must be > 0, got {values['distance_mpc']}")
    return values


# ----------------------------------------------------------------------- geometry / WCS


def muse_wcs(ra_deg: float, dec_deg: float, shape: tuple[int, int]) -> WCS:
    """Celestial TAN WCS of a (ny, nx) MUSE spaxel grid centred on (ra, dec), 0.2 arcsec spaxels."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra_deg, dec_deg]
    wcs.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    wcs.wcs.cd = np.diag([-MUSE_SPAXEL_ARCSEC / 3600.0, MUSE_SPAXEL_ARCSEC / 3600.0])
    return wcs


def hst_grid(
    muse: WCS, shape: tuple[int, int], pixel_arcsec: float, margin_arcsec: float
) -> tuple[WCS, tuple[int, int], int, int]:
    """HST WCS aligned with the MUSE grid (``factor`` x ``factor`` pixels per spaxel).

    The tangent point is a sky position ~(1.3, 0.9) arcsec away from the MUSE one (as for
    separately drizzled data); over a few arcsec the two TAN projections then differ by
    < 1e-4 arcsec, so HST pixel (j, i) lies in spaxel ((j - margin) // factor, (i - margin) // factor).

    Returns
    -------
    wcs, (ny_hst, nx_hst), factor, margin_px
    """
    ny, nx = shape
    factor = int(round(MUSE_SPAXEL_ARCSEC / pixel_arcsec))
    margin = int(round(margin_arcsec / pixel_arcsec))
    # reference point: a MUSE pixel position off the centre (0-based)
    xr, yr = (nx - 1) / 2.0 + 6.5, (ny - 1) / 2.0 + 4.5
    ra, dec = muse.wcs_pix2world([[xr, yr]], 0)[0]
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.crval = [ra, dec]
    # HST 0-based coordinate of MUSE 0-based x: factor * (x + 0.5) - 0.5 + margin; CRPIX is 1-based
    wcs.wcs.crpix = [factor * (xr + 0.5) - 0.5 + margin + 1, factor * (yr + 0.5) - 0.5 + margin + 1]
    wcs.wcs.cd = np.diag([-pixel_arcsec / 3600.0, pixel_arcsec / 3600.0])
    return wcs, (factor * ny + 2 * margin, factor * nx + 2 * margin), factor, margin


def galaxy_structure(row, recipe: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Geometry and component maps of the mock on its spaxel grid (all (ny, nx) arrays).

    Parameters
    ----------
    row : sample-sheet row (mapping) with inclination_deg, position_angle_deg, distance_mpc.
    recipe : recipe (defaults are filled in).

    Returns
    -------
    dict with ``radius`` (galaxy-plane radius / R_field), ``radius_arcsec``, ``phi`` (galaxy-
    plane azimuth from the receding major axis, rad), ``arm`` (arm strength 0-1, times the
    inner envelope), ``mass_bulge``, ``mass_disc``, ``mass_arm`` (mass formed per spaxel,
    M_sun), ``av`` (mag), ``r_field_arcsec`` and ``spaxel_area_kpc2`` (0-d arrays).
    """
    r = {**RECIPE_DEFAULTS, **recipe}
    values = _row_values(row)
    ny, nx = r["size_spaxels"]
    r_field = min(ny, nx) * MUSE_SPAXEL_ARCSEC / 2.0
    y, x = np.mgrid[0:ny, 0:nx].astype(float)
    east = -(x - (nx - 1) / 2.0) * MUSE_SPAXEL_ARCSEC  # RA grows to the left (CD1_1 < 0)
    north = (y - (ny - 1) / 2.0) * MUSE_SPAXEL_ARCSEC
    pa, inc = np.radians(values["position_angle_deg"]), np.radians(values["inclination_deg"])
    major = east * np.sin(pa) + north * np.cos(pa)
    minor = (-east * np.cos(pa) + north * np.sin(pa)) / max(np.cos(inc), 0.05)
    radius_arcsec = np.hypot(major, minor)
    radius = radius_arcsec / r_field
    phi = np.arctan2(minor, major)

    kpc_per_arcsec = values["distance_mpc"] * 1e3 * ARCSEC_RAD
    area = (MUSE_SPAXEL_ARCSEC * kpc_per_arcsec) ** 2
    inside = radius <= r["r_trunc"]
    b_n = 3.67  # Sersic n = 2
    sigma_bulge = 10 ** r["log_sigma_bulge"] * np.exp(-b_n * np.sqrt(radius / r["bulge_re"]))
    sigma_disc = 10 ** r["log_sigma_disc"] * np.exp(-radius / r["disc_rd"])
    pitch = np.radians(r["arm_pitch_deg"])
    psi = 2.0 * (phi - np.log(np.maximum(radius, 1e-3) / r["disc_rd"]) / np.tan(pitch))
    envelope = 1.0 - np.exp(-((radius / (2.0 * r["bulge_re"])) ** 2))
    arm = ((1.0 + np.cos(psi)) / 2.0) ** r["arm_sharpness"] * envelope
    av = r["av_outer"] + (r["av_center"] - r["av_outer"]) * np.exp(-radius / r["disc_rd"]) + r["av_arm_extra"] * arm
    return {
        "radius": radius,
        "radius_arcsec": radius_arcsec,
        "phi": phi,
        "arm": arm,
        "mass_bulge": np.where(inside, sigma_bulge * area, 0.0),
        "mass_disc": np.where(inside, sigma_disc * area, 0.0),
        "mass_arm": np.where(inside, r["arm_mass_fraction"] * sigma_disc * area * arm, 0.0),
        "av": np.clip(av, 0.0, 1.2),
        "r_field_arcsec": np.array(r_field),
        "spaxel_area_kpc2": np.array(area),
    }


# --------------------------------------------------------------------- star formation


def _lookback_grid(edges: np.ndarray) -> np.ndarray:
    last = edges[-1]
    breaks = np.array([RECENT_SFR_YR, ARM_BURST_YR, BULGE_STOP_YR, min(BULGE_START_YR, last), min(DISC_START_YR, last)])
    points = np.concatenate(
        [[0.0], np.geomspace(1e4, last, 600), edges, breaks, breaks * (1 - 1e-6), breaks * (1 + 1e-6)]
    )
    return np.unique(points[(points >= 0) & (points <= last)])


def _component_sfr(lookback: np.ndarray, edges: np.ndarray, disc_tau_yr: np.ndarray) -> dict[str, np.ndarray]:
    """Unnormalised SFR shapes on the lookback grid: bulge (n_t,), disc (n, n_t), arm (n_t,)."""
    start_b = min(BULGE_START_YR, edges[-1])
    stop_b = min(BULGE_STOP_YR, start_b - 5e8)
    bulge = np.where((lookback <= start_b) & (lookback >= stop_b), np.exp(-(start_b - lookback) / BULGE_TAU_YR), 0.0)
    start_d = min(DISC_START_YR, edges[-1])
    disc = np.where(lookback[None, :] <= start_d, np.exp(-(start_d - lookback[None, :]) / disc_tau_yr[:, None]), 0.0)
    arm = np.where(lookback <= ARM_BURST_YR, np.exp(-lookback / ARM_TAU_YR), 0.0)
    return {"bulge": bulge, "disc": disc, "arm": arm}


def _recent_fraction(sfr: np.ndarray, lookback: np.ndarray) -> np.ndarray:
    """Fraction of the mass of an SFR shape (..., n_t) formed in the last RECENT_SFR_YR (piecewise linear)."""
    total = np.trapezoid(sfr, lookback, axis=-1)
    recent = lookback <= RECENT_SFR_YR
    return np.trapezoid(sfr[..., recent], lookback[recent], axis=-1) / total


# ----------------------------------------------------------------------- convolution


def _gaussian_kernel(fwhm_pix: float) -> np.ndarray:
    """Normalised 1-D Gaussian (astropy, pixel-integrated by oversampling)."""
    kernel = Gaussian1DKernel(max(fwhm_pix, 1e-3) / FWHM_PER_SIGMA, mode="oversample", factor=25)
    kernel.normalize("integral")
    return np.asarray(kernel.array, dtype=float)


def _convolve2d(data: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable convolution over the last two axes, zero outside (flux leaving the field is lost)."""
    out = scipy.ndimage.convolve1d(data, kernel, axis=-1, mode="constant", cval=0.0)
    return scipy.ndimage.convolve1d(out, kernel, axis=-2, mode="constant", cval=0.0)


# ------------------------------------------------------------------------------ files


def _celestial_cards(wcs: WCS) -> fits.Header:
    """TAN WCS cards with a CD matrix, as in PHANGS-MUSE and drizzled HST files."""
    out = fits.Header()
    for i in (0, 1):
        out[f"CTYPE{i + 1}"] = wcs.wcs.ctype[i]
        out[f"CUNIT{i + 1}"] = "deg"
        out[f"CRVAL{i + 1}"] = float(wcs.wcs.crval[i])
        out[f"CRPIX{i + 1}"] = float(wcs.wcs.crpix[i])
    out["CD1_1"], out["CD1_2"] = (float(v) for v in wcs.wcs.cd[0])
    out["CD2_1"], out["CD2_2"] = (float(v) for v in wcs.wcs.cd[1])
    out["RADESYS"] = "ICRS"
    return out


def _muse_header(wcs: WCS) -> fits.Header:
    # a 3-D header: the celestial CD matrix plus the linear wavelength axis
    out = _celestial_cards(wcs)
    out["CTYPE3"], out["CUNIT3"] = "AWAV", "Angstrom"
    out["CRVAL3"], out["CRPIX3"], out["CD3_3"] = MUSE_CRVAL3, 1.0, MUSE_CD3_3
    out["CD1_3"] = out["CD2_3"] = out["CD3_1"] = out["CD3_2"] = 0.0
    out["BUNIT"] = MUSE_BUNIT
    return out


def _write_cube(
    path, galaxy: str, shape: tuple[int, int, int], header: fits.Header, seed: int, slabs: Iterator
) -> None:
    """Write a MUSE cube (primary, DATA, STAT; float32) slab by slab.

    ``shape`` is (n_wave, ny, nx); ``slabs`` yields (plane slice, data, variance) covering the
    planes in order. The file is laid out by hand (headers, then big-endian data padded to
    2880-byte blocks, as FITS is) so that no more than one slab is ever in memory.
    """
    primary = fits.PrimaryHDU()
    primary.header["OBJECT"] = galaxy
    primary.header["TELESCOP"] = "ESO-VLT-U4"
    primary.header["INSTRUME"] = "MUSE"
    primary.header["MOCK"] = (True, "synthetic cube written by sfh_pipeline.mock")
    primary.header["MOCKSEED"] = (int(seed), "seed of the noise")
    extensions = []
    for name in ("DATA", "STAT"):
        hdu = fits.ImageHDU(np.zeros((1, 1, 1), np.float32), header=header.copy(), name=name)
        for axis, size in enumerate(reversed(shape), 1):
            hdu.header[f"NAXIS{axis}"] = size
        extensions.append(hdu.header)
    extensions[1]["COMMENT"] = "variance of DATA"
    data_bytes = int(np.prod(shape)) * 4
    padded = -(-data_bytes // 2880) * 2880
    blocks = [primary.header.tostring().encode("ascii")]
    offsets = []
    position = len(blocks[0])
    for extension in extensions:
        text = extension.tostring().encode("ascii")
        blocks.append(text)
        offsets.append(position + len(text))
        position += len(text) + padded
    plane_bytes = shape[1] * shape[2] * 4
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(blocks[0])
        for text, offset in zip(blocks[1:], offsets, strict=True):
            f.seek(offset - len(text))
            f.write(text)
        f.truncate(position)  # the padding reads as zeros, as FITS wants
        written = 0
        for planes, data, var in slabs:
            for offset, values in zip(offsets, (data, var), strict=True):
                f.seek(offset + planes.start * plane_bytes)
                f.write(np.ascontiguousarray(values, dtype=">f4").tobytes())
            written = planes.stop
        if written != shape[0]:
            raise RuntimeError(f"{path}: slabs ended at plane {written} of {shape[0]}")


def _hst_headers(
    key: str, galaxy: str, wcs: WCS, shape: tuple[int, int], photflam: float, pivot: float, exptime: float
):
    """Primary headers (sci, wht) of a drizzled-HST-like image pair of ``shape`` (ny, nx), float32."""
    instrument, filt = key.split("_")
    header = fits.PrimaryHDU(np.zeros((1, 1), np.float32)).header
    header["NAXIS1"], header["NAXIS2"] = shape[1], shape[0]
    header.update(_celestial_cards(wcs))
    header["TELESCOP"] = "HST"
    header["INSTRUME"], header["DETECTOR"] = ("WFC3", "UVIS") if instrument == "wfc3-uvis" else ("ACS", "WFC")
    header["FILTER"] = filt.upper()
    header["TARGNAME"] = galaxy
    header["EXPTIME"] = (exptime, "[s] effective exposure time (mock)")
    header["PHOTFLAM"] = (photflam, "inverse sensitivity, ergs/cm2/A/e-")
    header["PHOTPLAM"] = (pivot, "Pivot wavelength (Angstroms)")
    header["PHOTFNU"] = (photflam * pivot**2 / C_AA_PER_S * 1e23, "inverse sensitivity, Jy*sec/electron")
    header["MOCK"] = (True, "synthetic image written by sfh_pipeline.mock")
    sci_header = header.copy()
    sci_header["BUNIT"] = "ELECTRONS/S"
    wht_header = header.copy()
    wht_header["BUNIT"] = "UNITLESS"
    wht_header["COMMENT"] = "inverse variance of the sci image, (electrons/s)**-2; 0 = no data"
    return sci_header, wht_header


@contextlib.contextmanager
def _streamed_images(paths_and_headers):
    """One ``astropy.io.fits.StreamingHDU`` per (path, header), each written to a temporary
    file that replaces ``path`` only when the block ends without error and the image is complete."""
    with contextlib.ExitStack() as stack:
        streams = []
        for path, header in paths_and_headers:
            tmp = stack.enter_context(atomic_path(path))
            stream = fits.StreamingHDU(tmp, header)
            stack.callback(stream.close)
            streams.append(stream)
        yield streams
        unfinished = [str(p) for (p, _), s in zip(paths_and_headers, streams, strict=True) if not s.writecomplete]
        if unfinished:
            raise RuntimeError(f"images left incomplete: {unfinished}")


# --------------------------------------------------------------------------- the mock


def write_mock_galaxy(
    row,
    recipe: dict,
    ssp_store,
    age_bin_edges_yr,
    filters: list[str],
    cube_path,
    hst_paths: dict[str, tuple[str | os.PathLike, str | os.PathLike]],
    truth_path,
) -> dict:
    """Write a mock galaxy's MUSE cube, HST images and truth maps in the PHANGS layouts.

    See the module docstring for the physics, the file layouts and the recipe keys.

    Parameters
    ----------
    row : mapping (or pandas Series)
        One sample-sheet row: ``galaxy``, ``muse_psf_fwhm_arcsec`` (arcsec),
        ``distance_mpc`` (Mpc), ``systemic_velocity_kms`` (km/s), ``ra_deg``, ``dec_deg``
        (deg), ``inclination_deg``, ``position_angle_deg`` (deg), ``ebv_galactic`` (mag).
    recipe : dict
        ``seed`` (int, required), ``size_spaxels`` [ny, nx], ``uncovered_band`` (band key or
        None) and the optional keys of the module docstring. Unknown keys raise ValueError.
    ssp_store : path-like
        Standard SSP store (:func:`sfh_pipeline.ssp.load_ssp`), covering 1800-10000 A rest.
    age_bin_edges_yr : sequence of float
        Lookback-time bin edges, yr (the SFH / ZH planes of the truth).
    filters : list of str
        HST band keys (e.g. ``wfc3-uvis_f438w``), as in ``row["hst_bands"]``.
    cube_path : path-like
        The MUSE cube to write.
    hst_paths : dict
        Band key -> (``exp-drc-sci`` path, ``err-drc-wht`` path); one entry per band of ``filters``.
    truth_path : path-like
        The truth maps file to write.

    Returns
    -------
    dict
        ``galaxy``, ``shape`` [ny, nx], ``n_spaxels``, ``n_galaxy_spaxels``, ``snr_min`` /
        ``snr_median`` / ``snr_max`` (expected continuum S/N per pixel over the galaxy's
        spaxels), ``noise_a`` (1e-20 erg/s/cm^2/A) and ``noise_b`` ((1e-20 erg/s/cm^2/A)^2)
        of variance = a * flux + b, ``band_flux_total_cgs`` {band: summed band flux density
        of all spaxels before noise, erg s^-1 cm^-2 A^-1}, ``seconds`` (wall time) and
        ``files``.

    Notes
    -----
    Every file is written atomically (:func:`sfh_pipeline.atomic.atomic_path`); the truth
    file with :func:`sfh_pipeline.products.write_maps`.
    """
    t0 = time.perf_counter()
    filters = list(filters)
    r = resolve_recipe(recipe, filters)
    values = _row_values(row)
    galaxy = str(values["galaxy"])
    missing = [band for band in filters if band not in hst_paths]
    if missing:
        raise ValueError(f"{galaxy}: no output paths for HST bands {missing}")
    rng = np.random.default_rng(int(r["seed"]))
    ny, nx = r["size_spaxels"]
    structure = galaxy_structure(row, r)
    edges = np.asarray(age_bin_edges_yr, dtype=float)
    ssp = load_ssp(ssp_store)
    pops = _stellar_populations(structure, r, edges, (float(np.min(ssp.logzsol)), float(np.max(ssp.logzsol))))
    if pops["sel"].size == 0:
        raise ValueError(f"{galaxy}: the recipe puts no stars in the field (check r_trunc)")
    kin = _kinematics(values, r, structure, pops)
    sel = pops["sel"]

    wave = MUSE_CRVAL3 + MUSE_CD3_3 * np.arange(MUSE_NAXIS3)
    model = ForwardModel(
        ssp,
        age_bin_edges_yr=edges,
        wavelength_aa=wave,
        filters=filters,
        max_velocity_kms=float(np.max(np.abs(kin["v_star"])) + 5 * np.max(kin["sigma_star"]) + 100.0),
        norm_window_aa=NORM_WINDOW_AA,
    )
    distance_cm = values["distance_mpc"] * MPC_CM
    throughputs = load_throughputs(filters)
    lines = _emission_lines(pops, kin, r, distance_cm)
    transmission = galactic_transmission(wave, values["ebv_galactic"])
    with _SpectraByPlane(wave.size, sel.size, Path(cube_path).parent) as spectra:
        light = _model_spaxels(model, pops, kin, lines, distance_cm, transmission, r["sigma_gas_kms"], spectra)
        phot = light.pop("photometry") + _line_photometry(lines, throughputs)
        kernel = _gaussian_kernel(values["muse_psf_fwhm_arcsec"] / MUSE_SPAXEL_ARCSEC)

        def grid_image(per_spaxel: np.ndarray) -> np.ndarray:
            """(n, k) values of the modelled spaxels -> (k, ny, nx) images, zero elsewhere."""
            image = np.zeros((per_spaxel.shape[1], ny * nx))
            image[:, sel] = per_spaxel.T
            return image.reshape(-1, ny, nx)

        bin_light = _convolve2d(grid_image(light["bin_light"]), kernel)  # (n_bins, ny, nx)
        total_light = bin_light.sum(0)
        galaxy_mask = total_light > r["light_floor"] * total_light.max()
        v_sys = values["systemic_velocity_kms"]
        window = np.flatnonzero(
            (wave >= NORM_WINDOW_AA[0] * (1 + v_sys / C_KMS)) & (wave <= NORM_WINDOW_AA[1] * (1 + v_sys / C_KMS))
        )
        window = slice(int(window[0]), int(window[-1]) + 1)
        a, b, snr_map = _continuum_noise(spectra, sel, (ny, nx), kernel, window, galaxy_mask, r)
        wcs = muse_wcs(values["ra_deg"], values["dec_deg"], (ny, nx))

        def noisy_slabs():
            step = max(1, CUBE_SLAB_VALUES // (ny * nx))
            for start in range(0, wave.size, step):
                planes = slice(start, min(start + step, wave.size))
                cube = _cube_planes(spectra, sel, (ny, nx), kernel, planes)  # noiseless, PSF-convolved
                var = a * np.maximum(cube, 0.0) + b
                yield planes, cube + np.sqrt(var) * rng.standard_normal(cube.shape), var

        _write_cube(cube_path, galaxy, (wave.size, ny, nx), _muse_header(wcs), r["seed"], noisy_slabs())

    band_totals = _write_hst_images(
        hst_paths, galaxy, grid_image(phot), throughputs, wcs, (ny, nx), values["ebv_galactic"], r, rng
    )
    images = _truth_images(pops, light, bin_light, galaxy_mask, grid_image, kernel, edges, structure)
    images.update(SNR=np.where(galaxy_mask, snr_map, np.nan))
    assert set(images) == set(MAP_HDUS)
    meta = {
        "GALAXY": galaxy,
        "DIST_MPC": values["distance_mpc"],
        "MODEL": "truth",
        "MODELSHA": "truth",
        "ZSUN_REF": float(ssp.attrs.get("zsun", 0.02)),
        "SSPNAME": str(ssp.attrs.get("name", ""))[:60],
        "MOCKSEED": int(r["seed"]),
    }
    write_maps(truth_path, images, wcs, edges, meta)

    files = [str(cube_path), *(str(p) for pair in hst_paths.values() for p in pair), str(truth_path)]
    snr_in = snr_map[galaxy_mask]
    return {
        "galaxy": galaxy,
        "shape": [ny, nx],
        "n_spaxels": ny * nx,
        "n_galaxy_spaxels": int(galaxy_mask.sum()),
        "snr_min": float(snr_in.min()),
        "snr_median": float(np.median(snr_in)),
        "snr_max": float(snr_in.max()),
        "noise_a": float(a),
        "noise_b": float(b),
        "band_flux_total_cgs": band_totals,
        "seconds": round(time.perf_counter() - t0, 3),
        "files": files,
    }


def _stellar_populations(
    structure: dict[str, np.ndarray], r: dict[str, Any], edges: np.ndarray, logz_range: tuple[float, float]
) -> dict[str, np.ndarray]:
    """The stars of every spaxel that has any (flat row-major indices ``sel``).

    Per such spaxel: ``radius`` (R_field), ``mass_formed`` (M_sun), ``bulge_share`` (of the
    mass formed), ``bin_mass`` / ``bin_mass_bulge`` (M_sun formed per age bin, all / bulge),
    ``mass_fractions``, ``logz`` per bin (dex, clipped to ``logz_range``) and ``recent_sfr``
    (M_sun/yr over the last ``RECENT_SFR_YR``).
    """
    mass_c = {c: structure[f"mass_{c}"].ravel() for c in ("bulge", "disc", "arm")}
    mass_total = mass_c["bulge"] + mass_c["disc"] + mass_c["arm"]
    sel = np.flatnonzero(mass_total > 0)
    rad = structure["radius"].ravel()[sel]
    lookback = _lookback_grid(edges)
    disc_tau_yr = 1e9 * (r["disc_tau_gyr"][0] + r["disc_tau_gyr"][1] * rad)
    shared = _component_sfr(lookback, edges, disc_tau_yr[:0])
    fractions = {c: bin_mass_fractions(shared[c], lookback, edges)[None, :] for c in ("bulge", "arm")}
    recent = {c: _recent_fraction(shared[c], lookback) for c in ("bulge", "arm")}
    # the disc's SFR differs per spaxel and takes ~5 kB of lookback grid each: in batches
    fractions["disc"], recent["disc"] = np.empty((sel.size, edges.size - 1)), np.empty(sel.size)
    for start in range(0, sel.size, SFR_BATCH):
        part = slice(start, start + SFR_BATCH)
        disc = _component_sfr(lookback, edges, disc_tau_yr[part])["disc"]
        fractions["disc"][part] = bin_mass_fractions(disc, lookback, edges)
        recent["disc"][part] = _recent_fraction(disc, lookback)
    bin_mass_c = {c: mass_c[c][sel, None] * fractions[c] for c in fractions}
    bin_mass = sum(bin_mass_c.values())
    bin_age = 0.5 * (edges[1:] + edges[:-1])
    amr = r["amr_dex"] * np.clip(
        (np.log10(bin_age) - np.log10(AMR_START_YR)) / (np.log10(BULGE_START_YR) - np.log10(AMR_START_YR)), 0.0, 1.0
    )
    logz_disc = r["logz_center"] + r["logz_gradient"] * rad[:, None] - amr[None, :]
    logz_bulge = logz_disc + r["bulge_logz_offset"] - r["logz_gradient"] * rad[:, None]  # bulge: no gradient
    logz = np.where(
        bin_mass > 0,
        (bin_mass_c["bulge"] * logz_bulge + (bin_mass_c["disc"] + bin_mass_c["arm"]) * logz_disc)
        / np.where(bin_mass > 0, bin_mass, 1.0),
        logz_disc,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        mass_fractions = bin_mass / bin_mass.sum(1, keepdims=True)
    return {
        "sel": sel,
        "radius": rad,
        "mass_formed": mass_total[sel],
        "bulge_share": mass_c["bulge"][sel] / np.where(sel.size, mass_total[sel], 1.0),
        "bin_mass": bin_mass,
        "mass_fractions": mass_fractions,
        "logz": np.clip(logz, *logz_range),
        "recent_sfr": sum(mass_c[c][sel] * recent[c] for c in recent) / RECENT_SFR_YR,
    }


def _kinematics(
    values: dict[str, Any], r: dict[str, Any], structure: dict[str, np.ndarray], pops: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per modelled spaxel: gas and stellar line-of-sight velocities (``v_gas``, ``v_star``,
    km/s, systemic included), stellar dispersion ``sigma_star`` (km/s, bulge and disc
    mixed by mass), ``av`` (mag) and ``bc_extra`` (extra A_V of young stars, units of A_V)."""
    sel = pops["sel"]
    inc = np.radians(values["inclination_deg"])
    v_sys = values["systemic_velocity_kms"]
    rotation = (
        r["v_max_kms"] * np.tanh(pops["radius"] / r["r_turn"]) * np.sin(inc) * np.cos(structure["phi"].ravel()[sel])
    )
    share = pops["bulge_share"]
    return {
        "v_gas": v_sys + rotation,
        "v_star": v_sys + r["stellar_rotation_fraction"] * rotation,
        "sigma_star": np.sqrt(share * r["sigma_bulge_kms"] ** 2 + (1 - share) * r["sigma_disc_kms"] ** 2),
        "av": structure["av"].ravel()[sel],
        "bc_extra": np.full(sel.size, float(r["birth_cloud_extra"])),
    }


def _emission_lines(
    pops: dict[str, np.ndarray], kin: dict[str, np.ndarray], r: dict[str, Any], distance_cm: float
) -> dict[str, np.ndarray]:
    """Per line of :data:`LINE_RATIOS` and modelled spaxel: ``flux`` (erg/s/cm^2 at the
    telescope, attenuated by the gas A_V, before Galactic extinction) and ``observed``
    wavelength (A), keyed by line name in ``flux[name]`` / ``observed[name]``."""
    halpha = r["halpha_erg_s_per_msun_yr"] * pops["recent_sfr"] / (4 * np.pi * distance_cm**2)
    av_gas = kin["av"] * (1.0 + kin["bc_extra"])
    flux, observed = {}, {}
    for name, ratio in LINE_RATIOS.items():
        rest = EMISSION_LINES_AA[name]
        observed[name] = rest * (1.0 + kin["v_gas"] / C_KMS)
        flux[name] = ratio * halpha * 10 ** (-0.4 * av_gas * attenuation_curve(np.array([rest]))[0])
    return {"flux": flux, "observed": observed}


def _line_photometry(lines: dict[str, dict[str, np.ndarray]], throughputs: dict) -> np.ndarray:
    """(n, n_filters) band flux densities of the emission lines, erg/s/cm^2/A."""
    n = next(iter(lines["flux"].values())).size
    phot = np.zeros((n, len(throughputs)))
    for name, line_flux in lines["flux"].items():
        observed = lines["observed"][name]
        for j, t in enumerate(throughputs.values()):
            weight = np.interp(observed, t.wavelength_aa, t.throughput, left=0.0, right=0.0) * observed
            phot[:, j] += line_flux * weight / np.trapezoid(t.throughput * t.wavelength_aa, t.wavelength_aa)
    return phot


def _add_line_profiles(
    spectra: np.ndarray, wave: np.ndarray, lines: dict, part: slice, sigma_gas_kms: float, transmission: np.ndarray
) -> None:
    """Add the lines of spaxels ``part`` to ``spectra`` (k, n_wave), in 1e-20 erg/s/cm^2/A:
    Gaussians of the gas dispersion and the MUSE LSF, integrated over each pixel."""
    lsf_pix = np.arange(-12, 13)
    k = spectra.shape[0]
    for name, line_flux in lines["flux"].items():
        observed = lines["observed"][name][part]
        width = np.sqrt((observed * sigma_gas_kms / C_KMS) ** 2 + (muse_lsf_fwhm_aa(observed) / FWHM_PER_SIGMA) ** 2)
        centre_pix = np.rint((observed - MUSE_CRVAL3) / MUSE_CD3_3).astype(int)
        pix = centre_pix[:, None] + lsf_pix[None, :]  # (k, 25)
        ok = (pix >= 0) & (pix < wave.size)
        pix = np.clip(pix, 0, wave.size - 1)
        lo = (wave[pix] - 0.5 * MUSE_CD3_3 - observed[:, None]) / (np.sqrt(2) * width[:, None])
        hi = (wave[pix] + 0.5 * MUSE_CD3_3 - observed[:, None]) / (np.sqrt(2) * width[:, None])
        profile = 0.5 * (scipy.special.erf(hi) - scipy.special.erf(lo)) / MUSE_CD3_3  # per A
        add = np.where(ok, line_flux[part, None] * profile * transmission[pix] / MUSE_UNIT_CGS, 0.0)
        np.add.at(spectra, (np.repeat(np.arange(k), pix.shape[1]), pix.ravel()), add.ravel())


#: Spaxels forward-modelled at a time, and values (float64) of one slab of cube planes:
#: what bounds the memory of a mock of PHANGS-mosaic size.
SPAXEL_BATCH = 1024
#: Spaxels whose disc SFR is integrated on the fine lookback grid at a time (~5 kB each).
SFR_BATCH = 16384
CUBE_SLAB_VALUES = 2**24
#: HST image rows made and written at a time (a few hundred MB of float64 at PHANGS-HST widths).
HST_STRIP_ROWS = 1024


class _SpectraByPlane:
    """The spectra of n spaxels kept in a temporary file as (n_wave, n) float32: written a
    batch of spaxels at a time, read a slab of wavelength planes at a time, so that neither
    the writer nor the reader holds the whole cube (it stays in the page cache, not in RSS)."""

    def __init__(self, n_wave: int, n: int, directory: Path) -> None:
        self.n_wave, self.n = n_wave, n
        directory.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.TemporaryFile(dir=directory)
        self.file.truncate(n_wave * n * 4)
        self.fd = self.file.fileno()

    def __enter__(self) -> _SpectraByPlane:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def write_spaxels(self, start: int, block: np.ndarray) -> None:
        """Spectra (k, n_wave) of spaxels start .. start + k - 1."""
        columns = np.ascontiguousarray(block.T, dtype=np.float32)
        for plane in range(self.n_wave):
            os.pwrite(self.fd, columns[plane].tobytes(), (plane * self.n + start) * 4)

    def read_planes(self, planes: slice) -> np.ndarray:
        """(k, n) values of wavelength planes ``planes`` (step 1)."""
        count = (planes.stop - planes.start) * self.n
        raw = os.pread(self.fd, count * 4, planes.start * self.n * 4)
        return np.frombuffer(raw, dtype=np.float32).reshape(-1, self.n)


def _model_spaxels(
    model: ForwardModel,
    pops: dict[str, np.ndarray],
    kin: dict[str, np.ndarray],
    lines: dict,
    distance_cm: float,
    transmission: np.ndarray,
    sigma_gas_kms: float,
    spectra: _SpectraByPlane,
) -> dict[str, np.ndarray]:
    """Forward-model every spaxel with stars into ``spectra`` (1e-20 erg/s/cm^2/A, lines
    included, after Galactic extinction ``transmission``), in batches of SPAXEL_BATCH.

    Returns per spaxel ``photometry`` (n, n_filters; erg/s/cm^2/A of the stars, before
    Galactic extinction), ``bin_light`` (n, n_bins; attenuated L_sun/A in the norm window)
    and ``surviving`` (n; M_sun in stars and remnants now).
    """
    n = pops["sel"].size
    to_cgs = L_SUN_ERG_S / (4 * np.pi * distance_cm**2)  # (L_sun/A) -> erg/s/cm^2/A
    photometry = np.empty((n, len(model.filters)))
    bin_light = np.empty((n, model.edges_yr.size - 1))
    surviving = np.empty(n)
    m_formed = pops["mass_formed"]
    for start in range(0, n, SPAXEL_BATCH):
        part = slice(start, min(start + SPAXEL_BATCH, n))
        out = model.model(
            pops["mass_fractions"][part],
            pops["logz"][part],
            kin["av"][part],
            kin["sigma_star"][part],
            kin["v_star"][part],
            kin["bc_extra"][part],
        )
        block = out.flux * (m_formed[part, None] * to_cgs / MUSE_UNIT_CGS) * transmission[None, :]
        _add_line_profiles(block, model.wavelength_aa, lines, part, sigma_gas_kms, transmission)
        spectra.write_spaxels(start, block)
        photometry[part] = out.photometry * (m_formed[part, None] * to_cgs)
        bin_light[part] = out.bin_light * m_formed[part, None]
        surviving[part] = out.surviving_fraction * m_formed[part]
    return {"photometry": photometry, "bin_light": bin_light, "surviving": surviving}


def _cube_planes(
    spectra: _SpectraByPlane, sel: np.ndarray, shape: tuple[int, int], kernel: np.ndarray, planes: slice
) -> np.ndarray:
    """Noiseless cube planes (k, ny, nx) convolved with the MUSE PSF, 1e-20 erg/s/cm^2/A."""
    ny, nx = shape
    cube = np.zeros((planes.stop - planes.start, ny * nx))
    cube[:, sel] = spectra.read_planes(planes)
    return _convolve2d(cube.reshape(-1, ny, nx), kernel)


def _continuum_noise(
    spectra: _SpectraByPlane,
    sel: np.ndarray,
    shape: tuple[int, int],
    kernel: np.ndarray,
    window: slice,
    galaxy_mask: np.ndarray,
    recipe: Mapping[str, Any],
) -> tuple[float, float, np.ndarray]:
    """The noise law (a, b) of :func:`_noise_law` from the median continuum over the planes of
    ``window`` (the normalisation window), and the S/N map it gives (median over those planes
    of flux / noise). The planes are made CUBE_SLAB_VALUES at a time and the medians taken a
    band of rows at a time, so that only the window's planes themselves are held whole (0.4 GB
    at 560 x 560 spaxels; made at once, the window's convolution and S/N temporaries held
    several times that)."""
    ny, nx = shape
    planes = np.empty((window.stop - window.start, ny, nx))
    step = max(1, CUBE_SLAB_VALUES // (ny * nx))
    for start in range(window.start, window.stop, step):
        part = slice(start, min(start + step, window.stop))
        planes[part.start - window.start : part.stop - window.start] = _cube_planes(spectra, sel, shape, kernel, part)
    rows = max(1, CUBE_SLAB_VALUES // (planes.shape[0] * nx))
    continuum = np.concatenate([np.median(planes[:, y : y + rows], axis=0) for y in range(0, ny, rows)])
    a, b = _noise_law(continuum, galaxy_mask, recipe["snr_center"], recipe["snr_edge"])
    snr = [
        np.median(band / np.sqrt(a * np.maximum(band, 0.0) + b), axis=0)
        for band in (planes[:, y : y + rows] for y in range(0, ny, rows))
    ]
    return a, b, np.concatenate(snr)


def _noise_law(
    continuum: np.ndarray, galaxy_mask: np.ndarray, snr_center: float, snr_edge: float
) -> tuple[float, float]:
    """(a, b) of variance = a * flux + b (1e-20 erg/s/cm^2/A and its square) that gives S/N
    ``snr_center`` at the brightest continuum and ``snr_edge`` at the 10th percentile of the
    galaxy's spaxels (Poisson-like term plus a floor of sky and read noise)."""
    c_center = float(continuum.max())
    c_edge = float(np.percentile(continuum[galaxy_mask], 10))
    s_c, s_e = float(snr_center), float(snr_edge)
    if c_center > c_edge:
        a = (c_center**2 / s_c**2 - c_edge**2 / s_e**2) / (c_center - c_edge)
        b = c_edge**2 / s_e**2 - a * c_edge
    else:
        a, b = 0.0, c_center**2 / s_c**2
    if b <= 0 or a < 0:
        b = 0.1 * c_edge**2 / s_e**2
        a = max((c_center**2 / s_c**2 - b) / c_center, 0.0)
    return a, b


def _write_hst_images(
    hst_paths: dict,
    galaxy: str,
    band_images: np.ndarray,
    throughputs: dict,
    wcs: WCS,
    shape: tuple[int, int],
    ebv_galactic: float,
    r: dict[str, Any],
    rng: np.random.Generator,
) -> dict[str, float]:
    """Write each band's sci and wht images: the spaxel fluxes ``band_images`` (n_filters, ny,
    nx; erg/s/cm^2/A before Galactic extinction) spread over the finer HST pixels, convolved
    with the HST PSF, with Poisson and background noise. Returns each band's total flux
    density after Galactic extinction, before noise (erg/s/cm^2/A).

    The images are made and written ``HST_STRIP_ROWS`` rows at a time (each strip convolved
    with the rows the PSF reaches beyond it), so that a PHANGS-HST-sized image (tens of
    thousands of pixels a side) never sits in memory whole; the noise is drawn strip after
    strip, row-major, which gives the same deviates as drawing the whole image at once.
    """
    ny, nx = shape
    hwcs, hshape, factor, margin = hst_grid(wcs, (ny, nx), float(r["hst_pixel_arcsec"]), float(r["hst_margin_arcsec"]))
    hst_kernel = _gaussian_kernel(r["hst_psf_fwhm_arcsec"] / float(r["hst_pixel_arcsec"]))
    halo = hst_kernel.size // 2
    n_rows, n_cols = hshape
    band_totals = {}
    for j, (band, t) in enumerate(throughputs.items()):
        pivot = t.pivot_wavelength_aa
        spaxel_flux = band_images[j] * galactic_transmission(np.array([pivot]), ebv_galactic)[0]
        band_totals[band] = float(spaxel_flux.sum())
        photflam = PHOTFLAM[band]
        # count rate of each HST pixel row inside the MUSE field, one row per spaxel row (e-/s)
        row_rates = np.repeat(spaxel_flux, factor, axis=1) / factor**2 / photflam
        headers = _hst_headers(band, galaxy, hwcs, hshape, photflam, pivot, float(r["hst_exptime_s"]))
        with _streamed_images(list(zip(hst_paths[band], headers, strict=True))) as (sci_out, wht_out):
            for start in range(0, n_rows, HST_STRIP_ROWS):
                stop = min(n_rows, start + HST_STRIP_ROWS)
                lo, hi = max(0, start - halo), min(n_rows, stop + halo)
                field_rows = np.arange(lo, hi) - margin
                inside = (field_rows >= 0) & (field_rows < factor * ny)
                counts = np.zeros((hi - lo, n_cols))
                counts[inside, margin : margin + factor * nx] = row_rates[field_rows[inside] // factor]
                counts = _convolve2d(counts, hst_kernel)[start - lo : stop - lo]
                var_h = np.maximum(counts, 0.0) / r["hst_exptime_s"] + r["hst_background_e_s"] ** 2
                sci = counts + np.sqrt(var_h) * rng.standard_normal(counts.shape)
                wht = 1.0 / var_h
                if band == r["uncovered_band"]:
                    lower = max(0, n_rows // 2 - start)
                    sci[lower:, n_cols // 2 :] = 0.0
                    wht[lower:, n_cols // 2 :] = 0.0
                sci_out.write(sci.astype(np.float32))
                wht_out.write(wht.astype(np.float32))
    return band_totals


def _truth_images(
    pops: dict[str, np.ndarray],
    light: dict[str, np.ndarray],
    bin_light: np.ndarray,
    galaxy_mask: np.ndarray,
    grid_image,
    kernel: np.ndarray,
    edges: np.ndarray,
    structure: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """The truth maps of the PSF-convolved cube (every quantity of
    :data:`sfh_pipeline.products.PRODUCTS` but ``SNR``), NaN outside ``galaxy_mask``: linear
    quantities convolved, then ratios taken (module docstring)."""
    ny, nx = galaxy_mask.shape
    logz = pops["logz"]
    mass_img = _convolve2d(grid_image(pops["bin_mass"]), kernel)
    mass_logz_img = _convolve2d(grid_image(pops["bin_mass"] * logz), kernel)
    light_logz_img = _convolve2d(grid_image(light["bin_light"] * logz), kernel)
    surviving_img = _convolve2d(grid_image(light["surviving"][:, None]), kernel)[0]
    log_age = np.log10(0.5 * (edges[1:] + edges[:-1]))[:, None, None]
    total_light = bin_light.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        total_mass = mass_img.sum(0)
        sfh = mass_img / total_mass
        zh = np.where(mass_img > 0, mass_logz_img / mass_img, np.nan)
        images = {
            "LW_AGE": (bin_light * log_age).sum(0) / total_light,
            "MW_AGE": (mass_img * log_age).sum(0) / total_mass,
            "LW_LOGZ": light_logz_img.sum(0) / total_light,
            "MW_LOGZ": mass_logz_img.sum(0) / total_mass,
            "MASS_DENSITY": np.log10(surviving_img / float(structure["spaxel_area_kpc2"])),
        }
    outside = ~galaxy_mask
    for image in images.values():
        image[outside] = np.nan
    sfh[:, outside] = np.nan
    zh[:, outside] = np.nan
    times = formation_times(np.moveaxis(sfh, 0, -1), edges)  # (ny, nx, 2), NaN outside
    images.update(T50=times[..., 0], T90=times[..., 1])
    images.update(
        BIN_ID=np.where(galaxy_mask, np.arange(ny * nx).reshape(ny, nx), -1).astype(np.int32),
        SFH=sfh,
        ZH=zh,
    )
    # the truth has no uncertainty (nor members to differ), and no fit to judge
    zero = np.where(galaxy_mask, 0.0, np.nan)
    for quantity in PRODUCTS:
        shape = map_planes(quantity.name, edges.size - 1) + (ny, nx)
        if quantity.truth == "zero":
            images[quantity.name] = np.broadcast_to(zero, shape)
        elif quantity.truth == "nan":
            images[quantity.name] = np.full(shape, np.nan)
    return images
