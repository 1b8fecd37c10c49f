"""The forward-model check: rebuild each spectrum from the network's SFH and metallicities.

For every bin, the spectrum of the predicted population (mass fractions per age bin and
log Z per bin, through :class:`sfh_pipeline.forward.ForwardModel`, per unit mass formed) is
the single template of a pPXF fit of the observed rest-frame spectrum: pPXF fits only the
line-of-sight velocity and dispersion, a Calzetti (2000) attenuation A_V (the training
set's dust law) and the template's weight. The weight is the mass formed, the reduced
chi^2 says how well the predicted population explains the spectrum (≈ 1 for a perfect
model): a map of where the network is out of its depth.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from ppxf import ppxf_util
from ppxf.ppxf import attenuation, ppxf

from ..core.constants import C_KMS
from ..core.instrument import linear_grid
from ..ssp import load_ssp
from ..synth.forward import ForwardModel

#: pPXF needs templates beyond the galaxy's range by its velocity search (+ a margin), km/s.
TEMPLATE_MARGIN_KMS = 2000.0
VELOCITY_BOUNDS_KMS = (-300.0, 300.0)
SIGMA_BOUNDS_KMS = (1.0, 500.0)
#: Spectra whose predicted populations are modelled at a time: the forward model holds a few
#: hundred kB per spectrum, so a tile of thousands of bins is modelled in chunks.
MODEL_CHUNK = 256


class ForwardCheck:
    """Fits of observed rest-frame spectra with the spectrum of a predicted population.

    Parameters
    ----------
    ssp_store : path of the SSP store the network's training set was made with.
    age_bin_edges_yr : lookback-time bin edges of the network, yr.
    wavelength_aa : the network's rest-frame wavelength grid (linear), A.
    """

    def __init__(self, ssp_store, age_bin_edges_yr, wavelength_aa: np.ndarray) -> None:
        wave = np.asarray(wavelength_aa, dtype=float)
        step = float(np.median(np.diff(wave)))
        margin = TEMPLATE_MARGIN_KMS / C_KMS
        self.galaxy_wave = wave
        self.template_wave = linear_grid(wave[0] * (1 - margin), wave[-1] * (1 + margin), step)
        self.model = ForwardModel(
            load_ssp(ssp_store), age_bin_edges_yr, wavelength_aa=self.template_wave, max_velocity_kms=300.0
        )

    def fit(
        self,
        flux: np.ndarray,
        error: np.ndarray,
        mask: np.ndarray,
        sfh: np.ndarray,
        logz: np.ndarray,
        method: str = "batched",
    ) -> dict[str, np.ndarray]:
        """Fit n normalised rest-frame spectra on the network grid with their predicted populations.

        Parameters
        ----------
        flux, error : (n, n_wave) in any common unit (e.g. normalised as for the network).
        mask : (n, n_wave) non-zero = pixel not fitted.
        sfh : (n, n_bins) mass fractions formed; logz : (n, n_bins) log10 Z/Z_sun.
        method : "batched" (all spectra at once, :func:`fit_single_templates`) or "ppxf" (one
            pPXF fit after another: the same model, 3.7 times slower per spectrum in
            ``bench/forward_check.py``; the reference).

        Returns
        -------
        ``chi2`` (reduced), ``av`` (mag), ``velocity_kms``, ``sigma_kms`` and
        ``mass_formed`` (M_sun formed per L_sun/A of the flux unit: multiply by the flux
        unit in L_sun/A to get solar masses) and ``surviving_fraction`` (present-day /
        formed stellar mass) of each spectrum; NaN where a fit is impossible (fewer than
        100 good pixels).
        """
        fit_part = {"batched": self._fit_batched, "ppxf": self._fit_each_with_ppxf}[method]
        n = flux.shape[0]
        out = {key: np.full(n, np.nan) for key in ("chi2", "av", "velocity_kms", "sigma_kms", "mass_formed")}
        if n == 0:
            out["surviving_fraction"] = np.zeros(0)
            return out
        out["surviving_fraction"] = np.empty(n)
        for start in range(0, n, MODEL_CHUNK):
            part = slice(start, min(n, start + MODEL_CHUNK))
            model = self.model.model(sfh[part], logz[part], np.zeros(part.stop - start), np.zeros(part.stop - start))
            out["surviving_fraction"][part] = model.surviving_fraction
            fit_part(flux[part], error[part], mask[part], model.flux, {k: v[part] for k, v in out.items()})
        return out

    def _fit_batched(
        self, flux: np.ndarray, error: np.ndarray, mask: np.ndarray, templates: np.ndarray, out: dict[str, np.ndarray]
    ) -> None:
        """Fit every spectrum with its own template (rows of ``templates`` on the template grid),
        all at once on the common log-rebinned grid (:func:`fit_single_templates`); results
        written into the arrays (views) of ``out``."""
        ends = self.galaxy_wave[[0, -1]]
        galaxy, ln_lam, velscale = ppxf_util.log_rebin(ends, np.nan_to_num(flux).T)
        variance, _, _ = ppxf_util.log_rebin(ends, (np.nan_to_num(error, nan=0.0) ** 2).T)
        bad_fraction, _, _ = ppxf_util.log_rebin(ends, ((mask != 0) | ~np.isfinite(flux)).astype(float).T)
        template, ln_lam_temp, _ = ppxf_util.log_rebin(self.template_wave[[0, -1]], templates.T, velscale=velscale)
        good = (bad_fraction.T < 1e-3) & (variance.T > 0)
        fitted = fit_single_templates(
            galaxy.T,
            np.sqrt(np.where(good, variance.T, 1.0)),
            good,
            template.T,
            offset_pixels=(ln_lam[0] - ln_lam_temp[0]) * C_KMS / velscale,
            velscale_kms=velscale,
            rest_wavelength_aa=np.exp(ln_lam),
        )
        for key in ("chi2", "av", "velocity_kms", "sigma_kms"):
            out[key][:] = fitted[key]
        out["mass_formed"][:] = fitted["weight"]

    def _fit_each_with_ppxf(
        self, flux: np.ndarray, error: np.ndarray, mask: np.ndarray, templates: np.ndarray, out: dict[str, np.ndarray]
    ) -> None:
        """pPXF fit of each spectrum with its template (rows of ``templates`` on the template
        grid), one after the other; results written into the arrays (views) of ``out``. The
        reference that the batched fit is tested and benchmarked against."""
        ends = self.galaxy_wave[[0, -1]]
        for i in range(flux.shape[0]):
            galaxy, ln_lam, velscale = ppxf_util.log_rebin(ends, np.nan_to_num(flux[i]))
            variance, _, _ = ppxf_util.log_rebin(ends, np.nan_to_num(error[i], nan=0.0) ** 2)
            bad_fraction, _, _ = ppxf_util.log_rebin(ends, ((mask[i] != 0) | ~np.isfinite(flux[i])).astype(float))
            good = (bad_fraction < 1e-3) & (variance > 0)
            if good.sum() < 100:
                continue
            template, ln_lam_temp, _ = ppxf_util.log_rebin(self.template_wave[[0, -1]], templates[i], velscale=velscale)
            scale = float(np.median(template))
            guess_sigma = 3.0 * velscale
            pp = ppxf(
                template / scale,
                galaxy,
                np.sqrt(np.where(good, variance, 1.0)),
                velscale,
                start=[0.0, guess_sigma],
                moments=2,
                degree=-1,
                mdegree=0,
                reddening=0.3,
                mask=good,
                lam=np.exp(ln_lam),
                lam_temp=np.exp(ln_lam_temp),
                bounds=[list(VELOCITY_BOUNDS_KMS), list(SIGMA_BOUNDS_KMS)],
                quiet=True,
            )
            out["chi2"][i] = pp.chi2
            out["av"][i] = pp.reddening
            out["velocity_kms"][i], out["sigma_kms"][i] = pp.sol[:2]
            out["mass_formed"][i] = pp.weights[0] / scale


def fit_single_templates(
    galaxy: np.ndarray,
    noise: np.ndarray,
    good: np.ndarray,
    template: np.ndarray,
    offset_pixels: float,
    velscale_kms: float,
    rest_wavelength_aa: np.ndarray,
    max_iterations: int = 40,
    tolerance: float = 1e-7,
) -> dict[str, np.ndarray]:
    """Fit n spectra, each with its own single template, at once: what pPXF does for one
    spectrum with ``moments=2, degree=-1, mdegree=0, reddening=0.3`` and one template.

    Every spectrum i is modelled as ``w_i * (T_i convolved with a Gaussian LOSVD of velocity v_i
    and dispersion sigma_i) * 10**(-0.4 A_V,i k(lambda))`` with the Calzetti (2000) curve k of
    ``ppxf.ppxf.attenuation``; the LOSVD is applied through its analytic Fourier transform, as
    pPXF does, so dispersions below a pixel are exact. The four parameters are found by
    Levenberg-Marquardt steps taken for all spectra together (analytic derivatives), within
    pPXF's bounds (v within +-300 km/s, sigma 1-500 km/s, A_V 0-4 mag), from pPXF's start
    (v = 0, sigma = 3 pixels, A_V = 0.3).

    Parameters
    ----------
    galaxy, noise : (n, n_pix) spectra and 1-sigma errors on a grid logarithmic in wavelength.
    good : (n, n_pix) bool, the pixels fitted.
    template : (n, n_temp) templates on the same logarithmic step, starting ``offset_pixels``
        pixels bluewards of the galaxy grid (and reaching beyond its red end by the LOSVD's reach).
    velscale_kms : the grid's step, km/s per pixel.
    rest_wavelength_aa : (n_pix,) the galaxy grid's wavelengths, A (for the attenuation).

    Returns
    -------
    ``chi2`` (chi^2 over good pixels per degree of freedom, pPXF's: good pixels minus the three
    non-linear parameters), ``velocity_kms``, ``sigma_kms``, ``av`` (mag) and ``weight`` (of the
    template, in galaxy units per template unit) of each spectrum; NaN where fewer than 100
    pixels are good or the template is empty.
    """
    n, n_pix = galaxy.shape
    nan = np.full(n, np.nan)
    result = {key: nan.copy() for key in ("chi2", "velocity_kms", "sigma_kms", "av", "weight")}
    scale = np.median(template, axis=1)
    usable = (good.sum(1) >= 100) & (scale > 0)
    if not usable.any():
        return result
    rows = np.flatnonzero(usable)
    y = galaxy[rows] / noise[rows] * good[rows]
    inv_noise = good[rows] / noise[rows]
    reach = int(np.ceil((VELOCITY_BOUNDS_KMS[1] + 5 * SIGMA_BOUNDS_KMS[1]) / velscale_kms))
    n_fft = scipy.fft.next_fast_len(template.shape[1] + reach, real=True)
    omega = 2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft
    # the templates' Fourier transforms, moved onto the galaxy grid's first pixel
    spectrum = scipy.fft.rfft(template[rows] / scale[rows, None], n_fft, axis=1) * np.exp(1j * omega * offset_pixels)
    # ln of the attenuation at A_V = 1: the attenuation at A_V is exp(A_V curve)
    curve = np.log(attenuation(rest_wavelength_aa, 1.0))
    lower = np.array([VELOCITY_BOUNDS_KMS[0], SIGMA_BOUNDS_KMS[0], 0.0])
    upper = np.array([VELOCITY_BOUNDS_KMS[1], SIGMA_BOUNDS_KMS[1], 4.0])

    def model(params: np.ndarray, which: np.ndarray, derivatives: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The unweighted models (m, n_pix) of spectra ``which`` with params (m, 3) = (v, sigma,
        A_V), and their derivatives (m, 3, n_pix) with respect to them."""
        sigma = params[:, 1:2] / velscale_kms
        kernel = spectrum[which] * _phasors(omega[1], params[:, 0] / velscale_kms, omega.size)
        kernel *= np.exp(-0.5 * (omega * sigma) ** 2)
        dust = np.exp(params[:, 2:3] * curve)
        convolved = scipy.fft.irfft(kernel, n_fft, axis=1)[:, :n_pix]
        m = convolved * dust
        if not derivatives:
            return m, None
        d_velocity = scipy.fft.irfft(kernel * (-1j * omega), n_fft, axis=1)[:, :n_pix] * dust / velscale_kms
        d_sigma = scipy.fft.irfft(kernel * (-(omega**2) * sigma), n_fft, axis=1)[:, :n_pix] * dust / velscale_kms
        d_dust = m * curve
        return m, np.stack([d_velocity, d_sigma, d_dust], axis=1)

    def chi2_and_weight(m: np.ndarray, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best weight of each model of spectra ``which`` (linear least squares) and its chi^2."""
        a = m * inv_noise[which]
        weight = np.einsum("ij,ij->i", a, y[which]) / np.maximum(np.einsum("ij,ij->i", a, a), 1e-300)
        residual = y[which] - weight[:, None] * a
        return np.einsum("ij,ij->i", residual, residual), weight

    params = np.tile([0.0, 3.0 * velscale_kms, 0.3], (rows.size, 1))
    everything = np.arange(rows.size)
    m, grads = model(params, everything, True)
    chi2, weight = chi2_and_weight(m, everything)
    damping = np.full(rows.size, 1e-3)
    active = np.ones(rows.size, bool)
    for _ in range(max_iterations):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        # Gauss-Newton system of (weight, v, sigma, A_V) for the residual y - weight * m / noise
        jac = np.concatenate([m[idx, None], weight[idx, None, None] * grads[idx]], axis=1) * inv_noise[idx, None]
        residual = y[idx] - weight[idx, None] * m[idx] * inv_noise[idx]
        normal = jac @ jac.transpose(0, 2, 1)
        gradient = (jac @ residual[..., None])[..., 0]
        diagonal = np.arange(4)
        normal[:, diagonal, diagonal] *= 1 + damping[idx, None]
        step = np.linalg.solve(normal, gradient[..., None])[..., 0]
        trial = np.clip(params[idx] + step[:, 1:], lower, upper)
        m_trial, _ = model(trial, idx, False)
        chi2_trial, weight_trial = chi2_and_weight(m_trial, idx)
        better = chi2_trial < chi2[idx]
        gain = np.where(better, (chi2[idx] - chi2_trial) / np.maximum(chi2[idx], 1e-300), 0.0)
        moved = idx[better]
        params[moved], chi2[moved], weight[moved] = trial[better], chi2_trial[better], weight_trial[better]
        if moved.size:
            m[moved], grads[moved] = model(params[moved], moved, True)
        damping[idx] = np.where(better, damping[idx] / 3, damping[idx] * 4)
        # converged: a step that gains less than ``tolerance`` of chi^2, or a step refused at high damping
        active[idx] = ~((better & (gain < tolerance)) | (~better & (damping[idx] > 1e4)))

    n_good = good[rows].sum(1)
    result["chi2"][rows] = chi2 / (n_good - 3)
    result["velocity_kms"][rows], result["sigma_kms"][rows], result["av"][rows] = params.T
    result["weight"][rows] = weight / scale[rows]
    return result


def _phasors(step: float, shift: np.ndarray, n: int) -> np.ndarray:
    """exp(-i k step shift) for k < n and each shift, (m, n): a shift of ``shift`` pixels in
    Fourier space. Built as products of about 2 sqrt(n) exponentials per row instead of n,
    because complex exponentials are most of a fit's cost; exact to about 1e-15."""
    block = int(np.ceil(np.sqrt(n)))
    fine = np.exp(-1j * step * shift[:, None] * np.arange(block))
    coarse = np.exp(-1j * step * block * shift[:, None] * np.arange(-(-n // block)))
    return (coarse[:, :, None] * fine[:, None, :]).reshape(shift.size, -1)[:, :n]
