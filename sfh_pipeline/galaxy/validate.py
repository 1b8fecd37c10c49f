"""Full-spectrum fitting as the reference for the network on real spectra (the ``validate`` stage).

On real galaxies there is no truth; the reference is what a careful astronomer would do with
the same SSP library the network was trained on: a pPXF fit of every bin with the whole
library grid (every age above ``age_min_yr`` and every metallicity) as templates, free
line-of-sight velocity and dispersion, a multiplicative Legendre polynomial of degree
``mdegree`` (which absorbs flux-calibration and dust shape, as the PHANGS DAP does) and the
emission lines masked (``emission_mask_kms``) or, with ``gas_components`` > 0, fitted at the
same time with pPXF's gas templates in that many kinematic components (a narrow and a broad
one: a real star-forming spectrum has gas wings of sigma ~ 900 km/s that reach past any line
mask); with ``clip_outliers`` pPXF's iterative 3-sigma clipping leaves out the pixels neither
describes (double-peaked lines, cosmic rays). Two solutions per spectrum:

* **unregularised** — the plain non-negative least-squares weights;
* **regularised** — pPXF's linear regularisation over the (age, metallicity) grid with
  strength ``regul``, after rescaling the errors so that the unregularised fit has
  chi^2/dof = 1 (the usual recipe, Cappellari 2017, sect. 3.5; PHANGS DAP, Emsellem et al.
  2022, uses regularised fits for its population maps).

Templates are normalised to a mean of 1 in the network's normalisation window
(5400-5600 A rest), so pPXF's weights are light fractions in the same window the training
set uses for its light weights; dividing by each template's mean flux per solar mass formed
gives the mass fractions formed. Ages are the SSP ages (log10 yr); metallicities log10 Z/Z_sun.

Uncertainties of the reference come from a wild bootstrap of the unregularised fit
(residuals multiplied by random signs, Kacharov et al. 2018) with the kinematics held fixed:
``n_bootstrap`` refits, standard deviation of each average.

A **second reference** (``second_reference`` of :func:`validate_galaxy`) repeats every fit with
another SSP library, e.g. E-MILES against the BC03 the network was trained with: the spread
between two careful full-spectrum fits of the same pixels is the library systematics that
no network trained on one library can be asked to beat. Log Z/Z_sun of the second library is
put on the training library's Z_sun (:func:`logz_shift_dex`); its own age and metallicity grid
(E-MILES: 63 Myr - 16 Gyr, [M/H] <= +0.22) bounds what it can return.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
from astropy.io import fits
from ppxf import ppxf_util
from ppxf.ppxf import ppxf

from ..core.atomic import atomic_path, write_json_atomically
from ..core.constants import C_KMS
from ..core.dust import correct_galactic_extinction
from ..core.instrument import muse_lsf_fwhm_aa
from ..core.products import SUMMARY_KEYS, read_bins, read_tile_tables
from ..core.samples import require_columns
from ..core.spectral import emission_line_mask, sky_mask, velocity_to_redshift
from ..ssp import load_ssp
from .extract import bin_geometry, extract_bin_spectra, wavelength_planes
from .phangs import MuseCube

#: Quantities compared with the network: the summaries of the maps
#: (:data:`sfh_pipeline.products.SUMMARIES`), by their keys in the predictor's results.
QUANTITIES = SUMMARY_KEYS
#: Each quantity and its 1-sigma error (dex).
WITH_ERRORS_KEYS = (*QUANTITIES, *(f"{k}_err" for k in QUANTITIES))
#: Reference LW log10 age/yr below which a real spectrum counts as young (star-forming disc
#: light, the regime of PHANGS maps), for :func:`young_agreement`.
YOUNG_LW_AGE = 9.2
#: What a fit with the second library gives per bin (REF2_ columns of bins.fits).
SECOND_REFERENCE_KEYS = (
    *(f"{k}{suffix}" for k in QUANTITIES for suffix in ("", "_err", "_unreg")),
    "velocity_kms",
    "sigma_kms",
    "chi2",
)

DEFAULT_SETTINGS: dict[str, Any] = {
    "age_min_yr": 3.0e7,  # youngest template (E-MILES starts at 6.3e7)
    "age_stride": 1,  # every n-th library age (with the oldest always kept)
    "mdegree": 8,  # multiplicative Legendre polynomial
    "regul": 100.0,  # pPXF regularisation strength (1 / allowed weight wiggle)
    "n_bootstrap": 8,  # wild-bootstrap refits for the reference's errors
    # the gas lines masked (0) or fitted with this many kinematic components (pPXF gas templates:
    # a narrow one of sigma <= 300 km/s and a broad one of 300-1500 km/s). A real star-forming
    # MaNGA spaxel has a sigma 900 km/s component whose wings no mask removes; on another the
    # double-peaked lines leave chi^2 11 where the mask leaves 3, 1.6 once clipped (docs/real_data.md)
    "gas_components": 0,
    "emission_mask_kms": 800.0,  # half-width of the gas-line mask: broad or offset gas leaks past 400
    # pPXF's iterative 3-sigma clipping of the unregularised fit's outliers (``clean``); the
    # regularised fit and the bootstrap then use the pixels it kept. Gas profiles that no set of
    # Gaussians describes (double peaks) are left out rather than fitted with stars
    "clip_outliers": False,
    "velocity_bounds_kms": 500.0,  # |residual velocity| allowed around the given z
    "seed": 1,
    # the reference's own uncertainty: each spectrum is fitted again with each of these changes
    # to the settings (same library, regularised, no bootstrap); with the reference's regularised
    # and unregularised solutions and the second library's they span the reference envelope
    # (envelope_agreement). Gas masks and polynomial degree each moved real answers by 0.2-0.4 dex
    "envelope": {
        "gas_mask_400": {"emission_mask_kms": 400.0},
        "mdegree_4": {"mdegree": 4},
        "gas_fitted": {"gas_components": 2, "clip_outliers": True},
    },
    # the validate stage (validate_galaxy)
    "min_snr": 20.0,  # bins below this S/N are not fitted
    "max_bins": 300,  # at most this many bins per galaxy (a seeded random subset)
    "tile_spaxels": 32,  # cube read in tiles of this size (infer.tile_spaxels)
}


def resolve_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """``settings`` over :data:`DEFAULT_SETTINGS`; unknown keys are errors."""
    merged = dict(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in merged:
            raise ValueError(f"unknown validate setting {key!r}; known: {', '.join(sorted(merged))}")
        merged[key] = value
    return merged


def population_averages(
    light_weights: np.ndarray, log_age: np.ndarray, logz: np.ndarray, mass_per_light: np.ndarray
) -> dict[str, float]:
    """Light- and mass-weighted <log10 age/yr> and <log10 Z/Z_sun> of weights on the
    (age, Z) grid. ``light_weights``, ``mass_per_light``: (n_age, n_Z); ``log_age``: (n_age,);
    ``logz``: (n_Z,)."""
    w = np.asarray(light_weights, dtype=float)
    m = w * mass_per_light
    if w.sum() <= 0:
        return {key: np.nan for key in QUANTITIES}
    age = np.broadcast_to(np.asarray(log_age)[:, None], w.shape)
    z = np.broadcast_to(np.asarray(logz)[None, :], w.shape)
    return {
        "lw_age": float((w * age).sum() / w.sum()),
        "mw_age": float((m * age).sum() / m.sum()),
        "lw_logz": float((w * z).sum() / w.sum()),
        "mw_logz": float((m * z).sum() / m.sum()),
    }


def log_rebin_with_errors(wave_aa: np.ndarray, flux: np.ndarray, error: np.ndarray, bad: np.ndarray):
    """Flux-conserving rebinning onto a grid uniform in ln lambda with as many pixels.

    Each output pixel is the overlap-weighted mean of the good input pixels it covers, with the
    error of that mean (input pixels independent), unlike log-rebinning the variance, which
    overstates the error of merged pixels. Returns flux, error, the bad fraction of each output
    pixel, ln lambda of the centres and the velocity step (km/s).
    """
    from ..core.spectral import pixel_edges
    from ..ml.predict import rebin_matrix

    edges_in = pixel_edges(wave_aa)
    ln_edges = np.linspace(np.log(edges_in[0]), np.log(edges_in[-1]), wave_aa.size + 1)
    overlap = rebin_matrix(edges_in, np.exp(ln_edges))
    good = ~np.asarray(bad, bool)
    covered = overlap @ good.astype(float)
    total = overlap @ np.ones(wave_aa.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_flux = overlap @ np.where(good, flux, 0.0) / covered
        out_error = np.sqrt(overlap.power(2) @ np.where(good, error, 0.0) ** 2) / covered
    bad_fraction = 1.0 - covered / total
    out_flux = np.where(covered > 0, out_flux, 0.0)
    out_error = np.where(covered > 0, out_error, 0.0)
    velscale = C_KMS * (ln_edges[1] - ln_edges[0])
    return out_flux, out_error, bad_fraction, 0.5 * (ln_edges[1:] + ln_edges[:-1]), velscale


class FullGridFit:
    """pPXF fits of rest-frame spectra with a whole SSP grid (see the module docstring).

    Parameters
    ----------
    ssp_store : path of an SSP store (:func:`sfh_pipeline.ssp.load_ssp`).
    rest_range_aa : (float, float)
        Rest-frame window fitted, A (the network's window, so both see the same pixels).
    redshift : float
        Redshift of the galaxy: the instrumental LSF (observed frame) is ``FWHM(lambda (1+z))
        / (1+z)`` in the rest frame, A.
    settings : dict
        Keys of :data:`DEFAULT_SETTINGS`.
    norm_window_aa : (float, float)
        Rest-frame window of the light weights, A.
    lsf_fwhm_aa : callable
        Instrumental FWHM (A) as a function of observed wavelength (A).
    """

    def __init__(
        self,
        ssp_store,
        rest_range_aa=(4800.0, 7000.0),
        redshift: float = 0.0,
        settings: dict[str, Any] | None = None,
        norm_window_aa=(5400.0, 5600.0),
        lsf_fwhm_aa=muse_lsf_fwhm_aa,
    ) -> None:
        self.settings = resolve_settings(settings)
        margin = 1.0 + (self.settings["velocity_bounds_kms"] + 2000.0) / C_KMS
        lo, hi = rest_range_aa[0] / margin, rest_range_aa[1] * margin
        ssp = load_ssp(
            ssp_store, wavelength_range_aa=(lo, hi), age_range_yr=(float(self.settings["age_min_yr"]), np.inf)
        )
        keep = np.arange(0, ssp.ages_yr.size, int(self.settings["age_stride"]))
        keep = np.unique(np.r_[keep, ssp.ages_yr.size - 1])
        z = float(redshift)
        self._rest_lsf_fwhm_aa = lambda lam: lsf_fwhm_aa(lam * (1 + z)) / (1 + z)
        ssp = ssp.broadened(self._rest_lsf_fwhm_aa)
        self.rest_range_aa = (float(rest_range_aa[0]), float(rest_range_aa[1]))
        self.ages_yr = ssp.ages_yr[keep]
        self.log_age = np.log10(self.ages_yr)
        self.logzsol = np.asarray(ssp.logzsol, dtype=float)
        self.library_name = str(ssp.attrs.get("name", ssp_store))
        self.zsun = float(ssp.attrs.get("zsun", np.nan))
        flux = ssp.flux[:, keep, :].astype(np.float64)  # (n_Z, n_age, n_lam)
        window = (ssp.wavelength_aa >= norm_window_aa[0]) & (ssp.wavelength_aa <= norm_window_aa[1])
        # mean L_sun/A per M_sun formed in the window: light weight -> mass formed
        self.light_per_mass = flux[..., window].mean(-1).T  # (n_age, n_Z)
        self._lib_wave = ssp.wavelength_aa
        self._lib_flux = flux / self.light_per_mass.T[..., None]
        self._templates: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def _log_templates(self, velscale: float) -> tuple[np.ndarray, np.ndarray]:
        """Templates log-rebinned at ``velscale`` km/s: (n_pix, n_age, n_Z) and their ln lambda."""
        key = round(float(velscale), 6)
        if key not in self._templates:
            ends = self._lib_wave[[0, -1]]
            step = float(np.min(np.diff(self._lib_wave)))
            linear = np.arange(ends[0], ends[1], step)
            flat = self._lib_flux.reshape(-1, self._lib_wave.size)
            resampled = np.array([np.interp(linear, self._lib_wave, f) for f in flat])
            rebinned, ln_lam, _ = ppxf_util.log_rebin(linear[[0, -1]], resampled.T, velscale=velscale)
            n_z, n_age = self._lib_flux.shape[:2]
            templates = rebinned.reshape(-1, n_z, n_age).transpose(0, 2, 1)
            self._templates[key] = (np.ascontiguousarray(templates), ln_lam)
        return self._templates[key]

    def _gas_templates(self, ln_lam_temp: np.ndarray, rest_range_aa) -> np.ndarray:
        """pPXF's emission-line templates (Balmer lines, [S II] free; [O III], [O I], [N II]
        doublets at their fixed ratios) at the instrument's rest-frame LSF: (n_pix, n_lines)."""
        with contextlib.redirect_stdout(io.StringIO()):  # pPXF prints the lines it includes
            gas, _, _ = ppxf_util.emission_lines(ln_lam_temp, list(rest_range_aa), self._rest_lsf_fwhm_aa)
        return gas

    def _kinematics(self, stars: np.ndarray, ln_lam_temp: np.ndarray, lam: np.ndarray) -> dict[str, Any]:
        """Templates and pPXF kinematic arguments: the stars alone (gas masked) or with
        ``gas_components`` sets of gas templates, each with its own velocity and dispersion."""
        n_gas = int(self.settings["gas_components"])
        n_pix, n_age, n_z = stars.shape
        v_stars = float(self.settings["velocity_bounds_kms"])
        stellar_bounds = [[-v_stars, v_stars], [5.0, 1000.0]]
        if n_gas == 0:
            return dict(templates=stars, start=[0.0, 150.0], moments=2, bounds=stellar_bounds)
        gas = self._gas_templates(ln_lam_temp, (lam[0], lam[-1]))
        v_gas = [-v_stars - 500.0, v_stars + 500.0]
        sigma_gas = [[5.0, 1500.0]] if n_gas == 1 else [[5.0, 300.0], [300.0, 1500.0]] + [[5.0, 1500.0]] * (n_gas - 2)
        component = np.repeat(np.arange(n_gas + 1), [n_age * n_z] + [gas.shape[1]] * n_gas)
        return dict(
            templates=np.column_stack([stars.reshape(n_pix, -1)] + [gas] * n_gas),
            start=[[0.0, 150.0]] + [[0.0, float(np.mean(s))] for s in sigma_gas],
            moments=[2] * (n_gas + 1),
            bounds=[stellar_bounds] + [[v_gas, s] for s in sigma_gas],
            component=component,
            gas_component=component > 0,
        )

    def fit(
        self,
        rest_wave_aa: np.ndarray,
        flux: np.ndarray,
        error: np.ndarray,
        mask: np.ndarray | None = None,
        return_spectra: bool = False,
    ) -> dict[str, Any]:
        """Fit one rest-frame spectrum (any linear sampling; f_lambda in any unit).

        ``mask`` non-zero = pixel not fitted (gas lines are masked in addition when
        ``gas_components`` is 0).
        Returns, for the regularised fit, each of :data:`QUANTITIES`; the unregularised fit's as
        ``<key>_unreg``; bootstrap errors as ``<key>_err`` (dex); ``velocity_kms`` and
        ``sigma_kms`` (relative to the rest frame given), ``chi2`` (reduced, unregularised),
        ``gas_kinematics_kms`` ([velocity, sigma] of each gas component, when fitted),
        ``n_good`` pixels and, with ``return_spectra``, ``wave``/``galaxy``/``bestfit``/``good``
        on pPXF's log grid. NaN everywhere when fewer than 100 pixels are usable.
        """
        s = self.settings
        out: dict[str, Any] = {key: np.nan for key in QUANTITIES}
        out.update({f"{key}_unreg": np.nan for key in QUANTITIES})
        out.update({f"{key}_err": np.nan for key in QUANTITIES})
        out.update(velocity_kms=np.nan, sigma_kms=np.nan, chi2=np.nan, n_good=0)
        wave = np.asarray(rest_wave_aa, dtype=float)
        inside = (wave >= self.rest_range_aa[0]) & (wave <= self.rest_range_aa[1])
        if inside.sum() < 100:
            return out
        wave, flux, error = wave[inside], np.asarray(flux, float)[inside], np.asarray(error, float)[inside]
        bad = ~np.isfinite(flux) | ~np.isfinite(error) | (error <= 0)
        if mask is not None:
            bad |= np.asarray(mask)[inside] != 0
        galaxy, sigma, bad_fraction, ln_lam, velscale = log_rebin_with_errors(wave, flux, error, bad)
        variance = sigma**2
        lam = np.exp(ln_lam)
        good = (bad_fraction < 1e-3) & (variance > 0)
        if int(s["gas_components"]) == 0:
            good &= ~emission_line_mask(lam, s["emission_mask_kms"])
        out["n_good"] = int(good.sum())
        if good.sum() < 100:
            return out
        scale = float(np.median(galaxy[good]))
        if not scale > 0:
            return out
        galaxy = galaxy / scale
        noise = np.sqrt(np.where(good, variance, np.median(variance[good]))) / scale
        stars, ln_lam_temp = self._log_templates(velscale)
        n_age, n_z = stars.shape[1:]
        kinematics = self._kinematics(stars, ln_lam_temp, lam)
        templates, start, moments = (kinematics.pop(k) for k in ("templates", "start", "moments"))
        common = dict(
            degree=-1, mdegree=int(s["mdegree"]), mask=good, lam=lam, lam_temp=np.exp(ln_lam_temp), quiet=True
        )
        common.update(kinematics)
        pp = ppxf(
            templates, galaxy, noise, velscale, start=start, moments=moments, clean=bool(s["clip_outliers"]), **common
        )
        if s["clip_outliers"]:
            good = np.isin(np.arange(lam.size), pp.goodpixels)
            common["mask"] = good
            out["n_good"] = int(good.sum())
        n_stars = n_age * n_z
        mass_per_light = 1.0 / self.light_per_mass
        weights = pp.weights[:n_stars].reshape(n_age, n_z)
        for key, value in population_averages(weights, self.log_age, self.logzsol, mass_per_light).items():
            out[f"{key}_unreg"] = value
        stellar = np.atleast_2d(pp.sol)[0]
        out.update(velocity_kms=float(stellar[0]), sigma_kms=float(stellar[1]), chi2=float(pp.chi2))
        noise_scaled = noise * np.sqrt(max(pp.chi2, 1e-12))
        if "component" in kinematics:
            out["gas_kinematics_kms"] = [[float(v), float(sig)] for v, sig in np.asarray(pp.sol)[1:, :2]]
            fixed = dict(start=pp.sol, moments=moments, fixed=[[1, 1]] * len(moments))
        else:
            fixed = dict(start=list(pp.sol[:2]), moments=2, fixed=[1, 1])
        reg = ppxf(
            templates, galaxy, noise_scaled, velscale, regul=float(s["regul"]), reg_dim=(n_age, n_z), **fixed, **common
        )
        out.update(
            population_averages(reg.weights[:n_stars].reshape(n_age, n_z), self.log_age, self.logzsol, mass_per_light)
        )
        if int(s["n_bootstrap"]) > 1:
            rng = np.random.default_rng(int(s["seed"]))
            residual = galaxy - pp.bestfit
            draws = []
            for _ in range(int(s["n_bootstrap"])):
                resampled = pp.bestfit + residual * rng.choice((-1.0, 1.0), residual.size)
                boot = ppxf(templates, resampled, noise, velscale, **fixed, **common)
                weights = boot.weights[:n_stars].reshape(n_age, n_z)
                draws.append(population_averages(weights, self.log_age, self.logzsol, mass_per_light))
            for key in QUANTITIES:
                out[f"{key}_err"] = float(np.std([d[key] for d in draws], ddof=1))
        if return_spectra:
            out.update(wave=lam, galaxy=galaxy * scale, bestfit=pp.bestfit * scale, good=good)
        return out


# ---------------------------------------------------------------------------------------------
# The validate stage: every bin of a real galaxy, network against the full-grid reference.


def agreement(network: dict[str, np.ndarray], reference: dict[str, np.ndarray], young: bool = True) -> dict[str, Any]:
    """Network against reference per quantity of :data:`QUANTITIES`, over bins where both are finite.

    ``network`` and ``reference`` hold ``<key>`` and ``<key>_err`` arrays (dex). Returns per key
    ``median_delta_dex`` (median of network - reference), ``scatter_dex`` (1.4826 MAD of the
    difference), ``pull_within_1sigma`` (fraction of bins with |difference| <= the two errors
    added in quadrature), ``n``, and how well so few bins pin the first two down:
    ``median_delta_dex_68`` and ``scatter_dex_68``, 68 % ranges of each for Gaussian
    differences (:func:`gaussian_ranges`; None below 3 bins), and ``spearman_rho``, the rank
    correlation of network and reference (None below 3 bins). ``young``: the same for the bins
    whose reference LW log age is below :data:`YOUNG_LW_AGE`, with the largest |difference|.
    """
    out: dict[str, Any] = {}
    for key in QUANTITIES:
        delta = np.asarray(network[key], float) - np.asarray(reference[key], float)
        sigma = np.hypot(np.asarray(network[f"{key}_err"], float), np.nan_to_num(reference[f"{key}_err"]))
        ok = np.isfinite(delta) & np.isfinite(sigma)
        if not ok.any():
            out[key] = {"median_delta_dex": None, "scatter_dex": None, "pull_within_1sigma": None, "n": 0}
            continue
        d = delta[ok]
        out[key] = {
            "median_delta_dex": float(np.median(d)),
            "scatter_dex": float(_robust_scatter(d)),
            "pull_within_1sigma": float(np.mean(np.abs(d) <= sigma[ok])),
            "n": int(ok.sum()),
            "median_delta_dex_68": None,
            "scatter_dex_68": None,
        }
        out[key]["spearman_rho"] = None
        if d.size >= 3:
            ranges = gaussian_ranges(out[key]["median_delta_dex"], out[key]["scatter_dex"], d.size)
            out[key]["median_delta_dex_68"], out[key]["scatter_dex_68"] = ranges
            net, ref = np.asarray(network[key], float)[ok], np.asarray(reference[key], float)[ok]
            if np.ptp(net) > 0 and np.ptp(ref) > 0:  # ranks of constant values mean nothing
                out[key]["spearman_rho"] = float(scipy.stats.spearmanr(net, ref).statistic)
    if young:
        out["young"] = young_agreement(network, reference)
    return out


def young_agreement(network: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Network against reference on the young spectra or bins (reference LW log age below
    :data:`YOUNG_LW_AGE`): ``n``, ``lw_age_threshold`` and per quantity the
    :func:`agreement` keys and ``max_abs_delta_dex``."""
    is_young = np.asarray(reference["lw_age"], float) < YOUNG_LW_AGE
    subset = {k: np.asarray(v, float)[is_young] for k, v in network.items() if k in WITH_ERRORS_KEYS}
    ref_subset = {k: np.asarray(v, float)[is_young] for k, v in reference.items() if k in WITH_ERRORS_KEYS}
    out: dict[str, Any] = {"lw_age_threshold": YOUNG_LW_AGE, "n": int(is_young.sum())}
    out.update(agreement(subset, ref_subset, young=False))
    for key in QUANTITIES:
        delta = np.abs(subset[key] - ref_subset[key])
        out[key]["max_abs_delta_dex"] = float(np.nanmax(delta)) if np.isfinite(delta).any() else None
    return out


def gaussian_ranges(median: float, scatter: float, n: int, draws: int = 4000) -> tuple[list[float], list[float]]:
    """68 % ranges of the true median and the true scatter (dex) of Gaussian differences of
    which ``n`` gave this ``median`` and this :func:`_robust_scatter`: from ``draws`` simulated
    sets of n unit normals (seeded), the 16th–84th percentiles of median / scatter and of
    scatter alone, both free of the unknown truth, put around the measured values (exact for
    Gaussian differences, like Student's t). A bootstrap of the bins themselves is no use at
    n ≈ 7: its resamples repeat values, and their MADs fall mostly below the measured one."""
    z_lo, z_hi, q_lo, q_hi = _gaussian_pivots(n, draws)
    median_range = [float(median - scatter * z_hi), float(median - scatter * z_lo)]
    scatter_range = [float(scatter / q_hi), float(scatter / q_lo)]
    return median_range, scatter_range


@functools.lru_cache
def _gaussian_pivots(n: int, draws: int) -> tuple[float, float, float, float]:
    """16th and 84th percentiles of median / scatter and of scatter over sets of n unit normals."""
    samples = np.random.default_rng(0).standard_normal((draws, n))
    scatters = _robust_scatter(samples)
    return (*np.percentile(np.median(samples, 1) / scatters, [16, 84]), *np.percentile(scatters, [16, 84]))


def _robust_scatter(values: np.ndarray) -> np.ndarray:
    """1.4826 MAD along the last axis (dex): the standard deviation for Gaussian values."""
    median = np.median(values, -1, keepdims=True)
    return 1.4826 * np.median(np.abs(values - median), -1)


def envelope_settings(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings of each envelope variant (``settings['envelope']``): the reference's, changed as
    the variant says, without bootstrap (only its values enter the envelope)."""
    return {
        name: resolve_settings({**settings, **changes, "n_bootstrap": 0})
        for name, changes in (settings.get("envelope") or {}).items()
    }


def envelope_members(
    reference: dict[str, np.ndarray],
    variants: dict[str, dict[str, np.ndarray]],
    second: dict[str, np.ndarray] | None = None,
    second_label: str = "second library",
) -> dict[str, dict[str, np.ndarray]]:
    """The reference fits that span the envelope, per quantity of :data:`QUANTITIES` (dex, per
    spectrum or bin): the reference regularised and unregularised, each envelope variant
    (regularised) and, when there is one, the second library (regularised)."""
    members = {
        "regularised": {k: np.asarray(reference[k], float) for k in QUANTITIES},
        "unregularised": {k: np.asarray(reference[f"{k}_unreg"], float) for k in QUANTITIES},
    }
    members.update({name: {k: np.asarray(v[k], float) for k in QUANTITIES} for name, v in variants.items()})
    if second is not None:
        members[f"{second_label} regularised"] = {k: np.asarray(second[k], float) for k in QUANTITIES}
    return members


def envelope_bounds(members: dict[str, dict[str, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per quantity, the lowest and highest value of the envelope's fits per spectrum (dex;
    NaN where no fit gave a value)."""
    bounds = {}
    for key in QUANTITIES:
        stack = np.array([np.asarray(m[key], float) for m in members.values()])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            bounds[key] = (np.nanmin(stack, axis=0), np.nanmax(stack, axis=0))
    return bounds


def envelope_agreement(
    network: dict[str, np.ndarray], members: dict[str, dict[str, np.ndarray]], settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The network against the reference envelope of ``members`` (:func:`envelope_coverage`)
    and ``configurations``: the fits that span it, with the settings each variant changes."""
    variants = (settings or {}).get("envelope") or {}
    return {
        "configurations": {name: variants.get(name, {}) for name in members},
        **envelope_coverage(network, envelope_bounds(members)),
    }


def envelope_coverage(
    network: dict[str, np.ndarray], bounds: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, dict[str, Any]]:
    """Per quantity: ``within_envelope``, the share of spectra whose network value lies inside
    [lowest - sigma, highest + sigma] of the envelope (``bounds``, dex), sigma the network's
    1-sigma error; ``median_width_dex`` (highest - lowest) and ``n``."""
    out = {}
    for key in QUANTITIES:
        lo, hi = (np.asarray(b, float) for b in bounds[key])
        value = np.asarray(network[key], float)
        sigma = np.asarray(network[f"{key}_err"], float)
        ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(value) & np.isfinite(sigma)
        inside = (value >= lo - sigma) & (value <= hi + sigma)
        out[key] = {
            "within_envelope": float(inside[ok].mean()) if ok.any() else None,
            "median_width_dex": float(np.median((hi - lo)[ok])) if ok.any() else None,
            "n": int(ok.sum()),
        }
    return out


def real_data_summary(tables: dict[str, Any]) -> dict[str, Any]:
    """All real spectra and bins together: the network against the regularised reference
    (:func:`agreement`, with ``young``) and against the envelope (:func:`envelope_coverage`)
    over every row of ``tables`` ({set or galaxy: bins.fits or spectra.fits of the validate
    stages}); ``sets``: how many rows each gave; ``rows``: per spectrum or bin its set, name
    (``bin <id>`` for a galaxy's bins), the network's values and errors, the reference's and the
    envelope's bounds (dex), from which every figure here can be recomputed."""
    parts: list[dict[str, np.ndarray]] = []
    sets = {}
    rows = []
    for name, path in tables.items():
        with fits.open(path) as hdul:
            table = hdul[1].data
            labels = (
                [str(n).strip() for n in table["NAME"]]
                if "NAME" in table.columns.names
                else [f"bin {int(b)}" for b in table["BIN_ID"]]
            )
            columns = {
                **{k: table[f"NET_{k.upper()}"] for k in QUANTITIES},
                **{f"{k}_err": table[f"NET_{k.upper()}_ERR"] for k in QUANTITIES},
                **{f"ref_{k}": table[f"REF_{k.upper()}"] for k in QUANTITIES},
                **{f"ref_{k}_err": table[f"REF_{k.upper()}_ERR"] for k in QUANTITIES},
                **{
                    f"env_{k}_{end}": table[f"ENV_{k.upper()}_{end.upper()}"]
                    for k in QUANTITIES
                    for end in ("min", "max")
                },
            }
        parts.append({k: np.asarray(v, float) for k, v in columns.items()})
        sets[name] = len(table)
        for i, label in enumerate(labels):
            rows.append(
                {
                    "set": name,
                    "name": label,
                    "network": {k: float(parts[-1][k][i]) for k in WITH_ERRORS_KEYS},
                    "reference": {k: float(parts[-1][f"ref_{k}"][i]) for k in WITH_ERRORS_KEYS},
                    "envelope": {
                        k: [float(parts[-1][f"env_{k}_min"][i]), float(parts[-1][f"env_{k}_max"][i])]
                        for k in QUANTITIES
                    },
                }
            )
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    network = {k: joined[k] for k in WITH_ERRORS_KEYS}
    reference = {k: joined[f"ref_{k}"] for k in WITH_ERRORS_KEYS}
    bounds = {k: (joined[f"env_{k}_min"], joined[f"env_{k}_max"]) for k in QUANTITIES}
    return {
        "sets": sets,
        "n": int(sum(sets.values())),
        **agreement(network, reference),
        "envelope": envelope_coverage(network, bounds),
        "rows": rows,
    }


def logz_shift_dex(zsun_library: float, zsun_reference: float) -> float:
    """What to add to log10 Z/Z_sun of a library with solar metallicity ``zsun_library`` to put
    it on the Z_sun of another (``zsun_reference``): log10(zsun_library / zsun_reference).
    E-MILES (Padova+00, Z_sun = 0.019) on BC03's Z_sun = 0.02: -0.022 dex. 0 if either is unknown."""
    if not (np.isfinite(zsun_library) and np.isfinite(zsun_reference)) or zsun_library <= 0 or zsun_reference <= 0:
        return 0.0
    return float(np.log10(zsun_library / zsun_reference))


def compare_references(
    network: dict[str, np.ndarray], reference: dict[str, np.ndarray], second: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The second reference against the network and against the first reference.

    All three hold ``<key>`` and ``<key>_err`` of :data:`QUANTITIES` per bin; the references also
    ``<key>_unreg`` (their unregularised fits, with the same bootstrap errors). Returns
    :func:`agreement` of network - second (regularised) per quantity, ``unregularised`` (network
    - unregularised second), ``library_difference`` (first - second reference, both regularised;
    the pull uses both references' bootstrap errors) and ``library_difference_unregularised``.
    """

    def unreg(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: values[f"{k}_unreg"] for k in QUANTITIES}
        out.update({f"{k}_err": values[f"{k}_err"] for k in QUANTITIES})
        return out

    return {
        **agreement(network, second),
        "unregularised": agreement(network, unreg(second)),
        "library_difference": agreement(reference, second),
        "library_difference_unregularised": agreement(unreg(reference), unreg(second)),
    }


_WORKER: dict[str, Any] = {}


def _init_worker(ssp_store, rest_range_aa, redshift, settings, norm_window_aa, second=None) -> None:
    _WORKER["fit"] = FullGridFit(ssp_store, rest_range_aa, redshift, settings, norm_window_aa)
    _WORKER["variants"] = {
        name: FullGridFit(ssp_store, rest_range_aa, redshift, variant, norm_window_aa)
        for name, variant in envelope_settings(settings).items()
    }
    _WORKER["second"] = None
    if second is not None:
        second_store, second_settings = second
        _WORKER["second"] = FullGridFit(second_store, rest_range_aa, redshift, second_settings, norm_window_aa)


def _fit_one(args) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """The reference fit, the second library's (or None) and each envelope variant's of one bin."""
    rest, flux, error, mask = args
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        first = _WORKER["fit"].fit(rest, flux, error, mask)
        second = _WORKER["second"].fit(rest, flux, error, mask) if _WORKER["second"] is not None else None
        variants = {name: fit.fit(rest, flux, error, mask) for name, fit in _WORKER["variants"].items()}
    return first, second, variants


def validate_galaxy(
    cube_path,
    bins_path,
    tile_tables: list,
    ssp_store,
    model_path,
    row: dict[str, Any],
    settings: dict[str, Any],
    out_dir,
    processes: int = 1,
    second_reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Full-grid reference fits of a real galaxy's bins and their agreement with the network.

    Bins with S/N >= ``settings['min_snr']`` and a measured velocity are fitted (at most
    ``settings['max_bins']``, a seeded random subset beyond that), each in its rest frame (the
    velocity of its tile table), corrected for Galactic extinction like the network's input,
    with sky lines and telluric bands masked. Writes into ``out_dir``: ``agreement.json``
    (:func:`agreement` of the regularised reference, the unregularised one under
    ``unregularised``, the brightest bin, the settings), ``bins.fits`` (table ``BINS``: per-bin
    network and reference values), ``maps.png`` (side-by-side maps) and ``residuals.png`` (the
    brightest bin against both fits, :func:`plot_residuals`). Returns the agreement.

    ``second_reference`` (optional): ``{"ssp_store": path, "label": "E-MILES", "settings": {...}}``,
    a second library with which every bin is fitted again (``settings`` override ``settings`` for
    it, e.g. ``age_stride``). Its results, log Z/Z_sun shifted to the first library's Z_sun, go
    to ``agreement.json`` under ``second_reference`` (:func:`compare_references`, the grids of both
    libraries, the brightest bin) and to ``bins.fits`` as ``REF2_*`` columns; nothing else changes.
    """
    from ..ml.predict import load_predictor
    from .infer import velocity_range_kms

    s = resolve_settings(settings)
    out_dir = Path(out_dir)
    v_sys, ebv = require_columns(row, ("systemic_velocity_kms", "ebv_galactic"))
    bin_id, bin_snr, _ = read_bins(bins_path)
    table = read_tile_tables(tile_tables)
    order = np.argsort(table["BIN_ID"])
    table = {name: values[order] for name, values in table.items()}
    velocity = table["VELOCITY"]
    chosen = np.flatnonzero((bin_snr[table["BIN_ID"]] >= s["min_snr"]) & np.isfinite(velocity))
    if chosen.size > s["max_bins"]:
        chosen = np.sort(np.random.default_rng(int(s["seed"])).choice(chosen, int(s["max_bins"]), replace=False))
    predictor = load_predictor(model_path, device="cpu")
    rest_range = (float(predictor.wavelength_aa[0]), float(predictor.wavelength_aa[-1]))
    v_range = velocity_range_kms(row, {"velocity_range_kms": s["velocity_bounds_kms"]})
    # the same correction for the covariance of spaxels as the network's input had (1 before it)
    error_factors = np.nan_to_num(table.get("ERR_FACTOR", np.ones(velocity.size)), nan=1.0)
    jobs = _rest_frame_spectra(
        cube_path,
        bin_id,
        table["BIN_ID"][chosen],
        velocity,
        error_factors,
        rest_range,
        (v_sys - v_range, v_sys + v_range),
        ebv,
        s,
    )
    z_sys = float(velocity_to_redshift(v_sys))
    second_init = None
    if second_reference:
        unknown = set(second_reference) - {"ssp_store", "label", "settings"}
        if unknown or "ssp_store" not in second_reference:
            raise ValueError(
                f"second_reference needs 'ssp_store' and may have 'label', 'settings'; got {sorted(second_reference)}"
            )
        second_init = (
            second_reference["ssp_store"],
            resolve_settings({**s, **(second_reference.get("settings") or {})}),
        )
    init = (ssp_store, rest_range, z_sys, s, predictor.norm_window_aa, second_init)
    if processes > 1 and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(processes, _init_worker, init) as pool:
            per_bin = pool.map(_fit_one, [job[1] for job in jobs], chunksize=1)
    else:
        _init_worker(*init)
        per_bin = [_fit_one(job[1]) for job in jobs]
    fits_out = [fitted_bin[0] for fitted_bin in per_bin]

    fitted = np.array([job[0] for job in jobs], dtype=int)
    network = {k: table[k.upper()][fitted] for k in QUANTITIES}
    network.update({f"{k}_err": table[f"{k.upper()}_ERR"][fitted] for k in QUANTITIES})
    reference = (
        {k: np.array([r[k] for r in fits_out], float) for k in fits_out[0]}
        if fits_out
        else {f"{k}{suffix}": np.zeros(0) for k in QUANTITIES for suffix in ("", "_err", "_unreg")}
    )
    unregularised = {k: reference[f"{k}_unreg"] for k in QUANTITIES}
    unregularised.update({f"{k}_err": reference[f"{k}_err"] for k in QUANTITIES})
    result: dict[str, Any] = {
        "galaxy": str(row.get("galaxy")),
        "model": str(model_path),
        "reference": {
            "method": "pPXF, full SSP grid, regularised (regul) after chi2 rescaling; "
            "unregularised below; multiplicative polynomial, gas and sky masked",
            "library": Path(ssp_store).stem,
            "settings": s,
        },
        "n_bins": int(fitted.size),
        **agreement(network, reference),
        "unregularised": agreement(network, unregularised),
    }
    best = int(np.argmax(bin_snr[fitted])) if fitted.size else None
    if best is not None:
        result["brightest_bin"] = {
            "bin_id": int(fitted[best]),
            "snr": float(bin_snr[fitted[best]]),
            "network": {k: float(network[k][best]) for k in QUANTITIES},
            "reference": {k: float(reference[k][best]) for k in QUANTITIES},
            "reference_unregularised": {k: float(reference[f"{k}_unreg"][best]) for k in QUANTITIES},
        }
    second = None
    if second_init is not None:
        second = {k: np.array([fitted_bin[1][k] for fitted_bin in per_bin], float) for k in SECOND_REFERENCE_KEYS}
        result["second_reference"], second = _second_reference_agreement(
            second,
            network,
            reference,
            (ssp_store, s, result["reference"]["library"]),
            (*second_init, second_reference.get("label")),
            (best, int(fitted[best])) if best is not None else None,
            (rest_range, z_sys, predictor.norm_window_aa),
        )
    variants = {
        name: {k: np.array([fitted_bin[2][name][k] for fitted_bin in per_bin], float) for k in QUANTITIES}
        for name in envelope_settings(s)
    }
    label = result["second_reference"]["library"] if second is not None else ""
    members = envelope_members(reference, variants, second, label)
    result["envelope"] = envelope_agreement(network, members, s)
    bounds = envelope_bounds(members)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_bins_table(
        out_dir / "bins.fits", fitted, bin_snr[fitted], velocity[fitted], network, reference, second, result, bounds
    )
    plot_validation(bin_id, fitted, network, reference, out_dir / "maps.png", title=str(row.get("galaxy")))
    if best is not None:
        rest, flux, error, mask = jobs[best][1]
        spectra = FullGridFit(ssp_store, rest_range, z_sys, {**s, "n_bootstrap": 0}, predictor.norm_window_aa).fit(
            rest, flux, error, mask, return_spectra=True
        )
        population = {name: table[name][fitted[best]] for name in ("SFH", "ZH", "AV", "SIGMA")}
        plot_residuals(
            spectra,
            population,
            ssp_store,
            predictor.age_bin_edges_yr,
            out_dir / "residuals.png",
            title=f"{row.get('galaxy')} bin {fitted[best]} (S/N {bin_snr[fitted[best]]:.0f})",
        )
    write_json_atomically(out_dir / "agreement.json", result)
    return result


def _rest_frame_spectra(
    cube_path,
    bin_id: np.ndarray,
    ids: np.ndarray,
    velocity: np.ndarray,
    error_factors: np.ndarray,
    rest_range,
    velocity_span,
    ebv,
    s,
) -> list[tuple[int, tuple]]:
    """(bin, (rest wavelength A, flux, error, sky mask)) of each bin of ``ids``, sorted by bin:
    summed over the bin's spaxels, shifted by the bin's own velocity (km/s), corrected for
    Galactic extinction (E(B-V) ``ebv``) like the network's input, the error multiplied by the
    bin's ``error_factors`` (covariance of spaxels). Flux in the cube's units; ``velocity`` and
    ``error_factors`` are indexed by bin id."""
    cube = MuseCube.open(cube_path)
    geometry = bin_geometry(bin_id, int(s["tile_spaxels"]))
    planes = wavelength_planes(cube.wavelength_aa, rest_range, velocity_span)
    wave = cube.wavelength_aa[planes]
    sky = sky_mask(wave)
    owner = np.asarray(geometry.owner)
    jobs = []
    for tile in sorted(set(owner[ids])):
        members = ids[owner[ids] == tile]
        flux, var = extract_bin_spectra(cube, bin_id, members, geometry, planes)
        flux, error = correct_galactic_extinction(wave, ebv, flux, np.sqrt(var))
        for b, f, e in zip(members, flux, error):
            z = velocity_to_redshift(velocity[b])
            jobs.append((b, (wave / (1 + z), f, e * error_factors[b], sky)))
    jobs.sort(key=lambda job: job[0])
    return jobs


def _second_reference_agreement(
    second: dict[str, np.ndarray],
    network: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    first: tuple[Any, dict[str, Any], str],
    other: tuple[Any, dict[str, Any], str | None],
    brightest: tuple[int, int] | None,
    fit_frame: tuple,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``second_reference`` entry of agreement.json and the second library's per-bin values
    with log Z/Z_sun moved to the first library's Z_sun (:func:`logz_shift_dex`).

    ``first`` / ``other``: (SSP store, settings, label) of each library; ``brightest``: (index
    among the fitted bins, bin id) of the brightest bin; ``fit_frame``: (rest-frame range A,
    systemic z, normalisation window A) of :class:`FullGridFit`.
    """
    rest_range, z_sys, norm_window_aa = fit_frame
    first_fit, second_fit = (
        FullGridFit(store, rest_range, z_sys, {**settings, "n_bootstrap": 0}, norm_window_aa)
        for store, settings, _ in (first, other)
    )
    shift = logz_shift_dex(second_fit.zsun, first_fit.zsun)
    for k in ("lw_logz", "mw_logz"):
        second[k] = second[k] + shift
        second[f"{k}_unreg"] = second[f"{k}_unreg"] + shift

    def grid(fit, dz=0.0):
        return {
            "age_yr": [float(fit.ages_yr[0]), float(fit.ages_yr[-1])],
            "n_ages": int(fit.ages_yr.size),
            "logz": [float(fit.logzsol[0] + dz), float(fit.logzsol[-1] + dz)],
            "n_logz": int(fit.logzsol.size),
            "zsun": fit.zsun,
        }

    entry = {
        "library": str(other[2] or Path(other[0]).stem),
        "store": Path(other[0]).stem,
        "settings": other[1],
        "logz_shift_dex": shift,
        "note": "log Z/Z_sun of this library + logz_shift_dex, i.e. on the first library's Z_sun; "
        "library_difference = first reference - this one, bin by bin",
        "grids": {"first": {"library": first[2], **grid(first_fit)}, "second": grid(second_fit, shift)},
        "n_bins": int(np.isfinite(second["lw_age"]).sum()),
        **compare_references(network, reference, second),
    }
    if brightest is not None:
        best, best_bin = brightest
        entry["brightest_bin"] = {
            "bin_id": best_bin,
            "reference": {k: float(second[k][best]) for k in QUANTITIES},
            "reference_unregularised": {k: float(second[f"{k}_unreg"][best]) for k in QUANTITIES},
        }
    return entry, second


def _write_bins_table(
    path,
    fitted,
    snr,
    velocity,
    network,
    reference,
    second: dict[str, np.ndarray] | None,
    result: dict[str, Any],
    bounds: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    """bins.fits, table BINS: per fitted bin the network's values (NET_), the reference's (REF_,
    regularised, errors, unregularised, kinematics, chi2), the second library's (REF2_) and the
    reference envelope's lowest and highest values (ENV_<quantity>_MIN, _MAX)."""
    columns = [
        fits.Column("BIN_ID", "J", array=fitted),
        fits.Column("SNR", "E", array=snr),
        fits.Column("VELOCITY", "D", array=velocity),
    ]
    for k in QUANTITIES:
        for name, values in (
            (f"NET_{k.upper()}", network[k]),
            (f"NET_{k.upper()}_ERR", network[f"{k}_err"]),
            (f"REF_{k.upper()}", reference[k]),
            (f"REF_{k.upper()}_ERR", reference[f"{k}_err"]),
            (f"REF_{k.upper()}_UNREG", reference[f"{k}_unreg"]),
        ):
            columns.append(fits.Column(name, "D", array=np.asarray(values, float)))
    for name in ("velocity_kms", "sigma_kms", "chi2"):
        columns.append(fits.Column(f"REF_{name.upper()}", "D", array=np.asarray(reference.get(name, []), float)))
    for k in QUANTITIES:
        for end, values in zip(("MIN", "MAX"), bounds[k], strict=True):
            columns.append(fits.Column(f"ENV_{k.upper()}_{end}", "D", array=np.asarray(values, float)))
    if second is not None:
        for k in QUANTITIES:
            for name, key in (
                (f"REF2_{k.upper()}", k),
                (f"REF2_{k.upper()}_ERR", f"{k}_err"),
                (f"REF2_{k.upper()}_UNREG", f"{k}_unreg"),
            ):
                columns.append(fits.Column(name, "D", array=second[key]))
        for name in ("velocity_kms", "sigma_kms", "chi2"):
            columns.append(fits.Column(f"REF2_{name.upper()}", "D", array=second[name]))
    table_hdu = fits.BinTableHDU.from_columns(columns, name="BINS")
    table_hdu.header["REFLIB"] = (result["reference"]["library"], "library of the REF_ columns")
    if second is not None:
        table_hdu.header["REF2LIB"] = (result["second_reference"]["library"], "library of the REF2_ columns")
        table_hdu.header["REF2DZ"] = (
            result["second_reference"]["logz_shift_dex"],
            "dex added to REF2_ log Z/Zsun (Zsun of REF_)",
        )
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), table_hdu]).writeto(tmp)


def plot_residuals(spectra: dict, population: dict, ssp_store, age_bin_edges_yr, out_png, title: str = "") -> None:
    """One bin's spectrum against the full-grid pPXF fit and against the spectrum rebuilt from the
    network's population (its SFH and ZH, with the A_V and sigma of the forward-model check,
    scaled by one factor and no polynomial), and both residuals by wavelength (rest frame)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..synth.forward import ForwardModel

    lam, galaxy, good = spectra["wave"], spectra["galaxy"], spectra["good"]
    model = ForwardModel(load_ssp(ssp_store), age_bin_edges_yr, wavelength_aa=lam, max_velocity_kms=1000.0)
    av = float(np.nan_to_num(population["AV"]))
    sigma = float(np.nan_to_num(population["SIGMA"], nan=200.0))
    rebuilt = model.model(
        np.asarray(population["SFH"], float)[None],
        np.asarray(population["ZH"], float)[None],
        np.array([av]),
        np.array([sigma]),
    ).flux[0]
    scale = float(np.sum(galaxy[good] * rebuilt[good]) / np.sum(rebuilt[good] ** 2))
    rebuilt = rebuilt * scale
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True, height_ratios=(2, 1))
    top.plot(lam, np.where(good, galaxy, np.nan), color="k", lw=0.5, label="data (fitted pixels)")
    top.plot(lam, spectra["bestfit"], color="C0", lw=0.7, label="full-grid pPXF (polynomial)")
    top.plot(lam, rebuilt, color="C3", lw=0.7, label="network's population (dust, no polynomial)")
    top.legend(fontsize=8)
    top.set_title(title, fontsize=10)
    for name, fit, colour in (("pPXF", spectra["bestfit"], "C0"), ("network", rebuilt, "C3")):
        residual = np.where(good, (galaxy - fit) / np.median(galaxy[good]), np.nan)
        bottom.plot(lam, residual, color=colour, lw=0.5, label=f"{name}: rms {np.nanstd(residual):.3f}")
    bottom.axhline(0, color="k", lw=0.5)
    bottom.set_ylim(-0.15, 0.15)
    bottom.set_xlabel("rest-frame wavelength / A")
    bottom.set_ylabel("(data - fit) / median")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)


def plot_validation(
    bin_id: np.ndarray, fitted: np.ndarray, network: dict, reference: dict, out_png, title: str = ""
) -> None:
    """Maps of the network, the reference and their difference for LW age and LW log Z, and the
    one-to-one diagrams of all four quantities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lookup = np.full(int(bin_id.max(initial=-1)) + 1, -1)
    lookup[fitted] = np.arange(fitted.size)
    fig, axes = plt.subplots(3, 4, figsize=(14, 10))
    for row_axes, key, label in ((axes[0], "lw_age", "LW log age / yr"), (axes[1], "lw_logz", "LW log Z/Z$_\\odot$")):
        values = {"network": network[key], "pPXF": reference[key], "network - pPXF": network[key] - reference[key]}
        for ax, (name, v) in zip(row_axes[:3], values.items()):
            per_bin = np.full(lookup.size, np.nan)
            per_bin[lookup >= 0] = np.asarray(v, float)[lookup[lookup >= 0]]
            image = (
                np.where(bin_id >= 0, per_bin[np.clip(bin_id, 0, None)], np.nan)
                if lookup.size
                else np.full(bin_id.shape, np.nan)
            )
            diff = name.startswith("network -")
            im = ax.imshow(
                image,
                origin="lower",
                cmap="RdBu_r" if diff else "viridis",
                vmin=-0.5 if diff else None,
                vmax=0.5 if diff else None,
                interpolation="nearest",
            )
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"{label}: {name}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        row_axes[3].axis("off")
    for ax, key in zip(axes[2], QUANTITIES):
        x, y = np.asarray(reference[key], float), np.asarray(network[key], float)
        ax.errorbar(x, y, xerr=reference[f"{key}_err"], yerr=network[f"{key}_err"], fmt="o", ms=3, alpha=0.6)
        finite = np.isfinite(x) & np.isfinite(y)
        if finite.any():
            lo, hi = min(x[finite].min(), y[finite].min()), max(x[finite].max(), y[finite].max())
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"pPXF {key}", fontsize=8)
        ax.set_ylabel(f"network {key}", fontsize=8)
    fig.suptitle(f"{title}: network against full-grid pPXF ({fitted.size} bins)")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
