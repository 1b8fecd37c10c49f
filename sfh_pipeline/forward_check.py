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
from ppxf import ppxf_util
from ppxf.ppxf import ppxf

from .constants import C_KMS
from .forward import ForwardModel
from .instrument import linear_grid
from .ssp import load_ssp

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
        self, flux: np.ndarray, error: np.ndarray, mask: np.ndarray, sfh: np.ndarray, logz: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Fit n normalised rest-frame spectra on the network grid with their predicted populations.

        Parameters
        ----------
        flux, error : (n, n_wave) in any common unit (e.g. normalised as for the network).
        mask : (n, n_wave) non-zero = pixel not fitted.
        sfh : (n, n_bins) mass fractions formed; logz : (n, n_bins) log10 Z/Z_sun.

        Returns
        -------
        ``chi2`` (reduced), ``av`` (mag), ``velocity_kms``, ``sigma_kms`` and
        ``mass_formed`` (M_sun formed per L_sun/A of the flux unit: multiply by the flux
        unit in L_sun/A to get solar masses) and ``surviving_fraction`` (present-day /
        formed stellar mass) of each spectrum; NaN where a fit is impossible (fewer than
        100 good pixels).
        """
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
            self._fit_each(flux[part], error[part], mask[part], model.flux, {k: v[part] for k, v in out.items()})
        return out

    def _fit_each(
        self, flux: np.ndarray, error: np.ndarray, mask: np.ndarray, templates: np.ndarray, out: dict[str, np.ndarray]
    ) -> None:
        """pPXF fit of each spectrum with its template (rows of ``templates`` on the template
        grid); results written into the arrays (views) of ``out``."""
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
