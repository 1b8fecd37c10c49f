"""The forward model: from a binned SFH and metallicity history to a MUSE-like spectrum and HST fluxes.

One :class:`ForwardModel` is built per SSP library and output grid; it precomputes the
spectrum of every (age bin, library metallicity) pair, so that a batch of galaxies is a
few matrix products:

1. **Age bins** — each bin's spectrum is the SSP flux averaged over the bin for a constant
   SFR (trapezoidal integral of the piecewise-linear interpolant in age of the library's
   SSPs), likewise the surviving mass fraction; below the youngest SSP the youngest one is
   used (BC03's starts at 1 Myr).
2. **Metallicity** — a bin at log Z between library points is interpolated linearly in
   log Z (clipped to the library range).
3. **Dust** — A(lambda) = A_V * k(lambda)/k(V) of :mod:`sfh_pipeline.dust` (Calzetti et al.
   2000 by default), with an optional extra birth-cloud attenuation of the bins younger
   than ``birth_cloud_age_yr`` (Charlot & Fall 2000): A_V,young = A_V * (1 + birth_cloud_extra).
4. **Resolution and kinematics** — the bin spectra are degraded once from the library's
   FWHM to the instrumental LSF (MUSE UDF-10, Bacon et al. 2017, in the rest frame: the
   difference for z < 0.01 is < 1 %), resampled to a log-lambda grid of ``velscale_kms``, and
   every galaxy is then convolved with its Gaussian line-of-sight velocity distribution and
   shifted by a residual velocity in one FFT. Resampling (library -> log grid: cubic
   spline; log grid -> the network's linear grid, default 4800-7000 A at 1.25 A: cubic
   convolution) is accurate to < 0.5 % on lines as narrow as the MILES resolution.
5. **Photometry** — photon-counting mean f_lambda through each HST band
   (:class:`sfh_pipeline.filters.PhotometryOperator`) of the same attenuated model over the
   library's full wavelength range (kinematics do not change broad-band fluxes).

Fluxes are in L_sun/A per M_sun formed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft
import scipy.interpolate
import scipy.sparse

from ..core.constants import C_KMS
from ..core.dust import attenuation_curve
from ..core.filters import PhotometryOperator, load_throughputs
from ..core.instrument import linear_grid, muse_lsf_fwhm_aa
from ..ssp import SSPLibrary

DEFAULT_AGE_BIN_EDGES_YR = (0.0, 5e6, 1e7, 2e7, 4e7, 7e7, 1e8, 2e8, 4e8, 7e8, 1e9, 2e9, 3.5e9, 5e9, 8e9, 1.1e10, 1.4e10)
LN10_OVER_2P5 = np.log(10.0) / 2.5


def validate_age_bin_edges(edges_yr, ssp_ages_yr: np.ndarray) -> np.ndarray:
    """The bin edges (yr) as an array, checked against the library's ages.

    Edges must increase from >= 0; the first bin must contain an SSP and the last edge may
    not exceed the oldest SSP (ages beyond the library cannot be modelled). Errors name the
    config key ``trainset.age_bin_edges_yr``.
    """
    edges = np.asarray(edges_yr, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
        raise ValueError(f"trainset.age_bin_edges_yr must increase from >= 0 yr, got {edges.tolist()}")
    oldest, youngest = float(np.max(ssp_ages_yr)), float(np.min(ssp_ages_yr))
    if youngest > edges[1] * (1 + 1e-6):
        raise ValueError(
            f"the SSP library's youngest age {youngest:.4g} yr is older than the first bin "
            f"({edges[0]:.4g}-{edges[1]:.4g} yr) of trainset.age_bin_edges_yr: start the edges at "
            "the library's youngest age or use a library with younger SSPs"
        )
    if edges[-1] > oldest * (1 + 1e-6):
        raise ValueError(
            f"trainset.age_bin_edges_yr ends at {edges[-1]:.4g} yr, beyond the SSP library's oldest "
            f"age {oldest:.4g} yr: lower the last edge or widen ssp.age_range_yr"
        )
    return edges


def bin_average_matrix(ages_yr: np.ndarray, edges_yr: np.ndarray) -> np.ndarray:
    """Matrix W (n_bins, n_age) with ``W @ f(ages)`` = the mean of f over each bin in linear time.

    f is interpolated linearly in age between the SSPs (constant beyond the youngest and
    oldest), and integrated exactly: the trapezoid rule on the SSP ages inside the bin plus
    the two edges.
    """
    ages = np.asarray(ages_yr, dtype=float)
    identity = np.eye(ages.size)
    rows = []
    for lo, hi in zip(edges_yr[:-1], edges_yr[1:]):
        nodes = np.concatenate([[lo], ages[(ages > lo) & (ages < hi)], [hi]])
        hat = np.stack([np.interp(nodes, ages, identity[j]) for j in range(ages.size)], axis=1)
        widths = np.diff(nodes)
        rows.append((0.5 * (hat[1:] + hat[:-1]) * widths[:, None]).sum(0) / (hi - lo))
    return np.array(rows)


def log_lambda_grid(start_aa: float, stop_aa: float, velscale_kms: float) -> np.ndarray:
    """Wavelengths (A) equally spaced in ln(lambda) with step velscale/c, covering start-stop."""
    step = velscale_kms / C_KMS
    n = int(np.ceil(np.log(stop_aa / start_aa) / step)) + 1
    return start_aa * np.exp(step * np.arange(n))


def cubic_resampling_matrix(n_from: int, positions: np.ndarray) -> scipy.sparse.csr_matrix:
    """Sparse (n_from, n_to) matrix of cubic-convolution interpolation (Keys 1981, a = -1/2).

    ``positions`` are fractional pixel coordinates on a uniform input grid; ``f @ M`` gives
    the interpolated values. Four taps per output; exact for cubic polynomials.
    """
    base = np.floor(positions).astype(int)
    t = positions - base
    taps = np.stack(
        [
            ((-0.5 * t + 1.0) * t - 0.5) * t,
            (1.5 * t - 2.5) * t * t + 1.0,
            ((-1.5 * t + 2.0) * t + 0.5) * t,
            (0.5 * t - 0.5) * t * t,
        ],
        axis=1,
    )
    rows = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n_from - 1)
    cols = np.repeat(np.arange(positions.size), 4)
    return scipy.sparse.csr_matrix((taps.ravel(), (rows.ravel(), cols)), shape=(n_from, positions.size))


@dataclasses.dataclass(frozen=True)
class ModelOutput:
    """A batch of model galaxies (n = batch size), fluxes per M_sun formed."""

    flux: np.ndarray  # (n, n_wave) L_sun/A on the output grid
    photometry: np.ndarray  # (n, n_filters) photon-weighted mean f_lambda, L_sun/A
    bin_light: np.ndarray  # (n, n_bins) attenuated light of each bin in the norm window, L_sun/A
    surviving_fraction: np.ndarray  # (n,) stellar mass now / mass formed


class ForwardModel:
    """Spectra and photometry of galaxies with binned SFHs (see module docstring).

    Parameters
    ----------
    ssp : SSPLibrary
        The library (any coverage that includes the filters' and the output grid's ranges).
    age_bin_edges_yr : sequence of float
        Lookback-time bin edges, yr.
    wavelength_aa : numpy.ndarray
        Output (rest-frame) wavelength grid, A.
    filters : sequence of str
        HST filter keys (:data:`sfh_pipeline.filters.PHANGS_FILTERS`).
    lsf_fwhm_aa : callable
        Instrumental FWHM (A) as a function of wavelength (A).
    dust_law : str
        One of :data:`sfh_pipeline.dust.DUST_LAWS`.
    birth_cloud_age_yr : float
        Bins whose upper edge is at most this age get the extra birth-cloud attenuation.
    velscale_kms : float
        Velocity step of the internal log-lambda grid, km/s.
    max_velocity_kms : float
        Largest |residual velocity| + 5 sigma expected, km/s; sets the grid margins.
    norm_window_aa : (float, float)
        Continuum window (A) where light weights are measured.
    """

    def __init__(
        self,
        ssp: SSPLibrary,
        age_bin_edges_yr=DEFAULT_AGE_BIN_EDGES_YR,
        wavelength_aa: np.ndarray | None = None,
        filters=(),
        lsf_fwhm_aa=muse_lsf_fwhm_aa,
        dust_law: str = "calzetti2000",
        birth_cloud_age_yr: float = 1e7,
        velscale_kms: float = 15.0,
        max_velocity_kms: float = 1500.0,
        norm_window_aa: tuple[float, float] = (5400.0, 5600.0),
    ) -> None:
        self.edges_yr = validate_age_bin_edges(age_bin_edges_yr, ssp.ages_yr)
        self.n_bins = self.edges_yr.size - 1
        self.wavelength_aa = (
            linear_grid(4800.0, 7000.0, 1.25) if wavelength_aa is None else np.asarray(wavelength_aa, float)
        )
        self.logzsol = np.asarray(ssp.logzsol, dtype=float)
        self.ssp_attrs = dict(ssp.attrs)
        self.velscale_kms = float(velscale_kms)
        self.norm_window_aa = tuple(norm_window_aa)
        self.filters = tuple(filters)
        self.dust_law = dust_law

        margin = max_velocity_kms / C_KMS
        lo, hi = self.wavelength_aa[0] * (1 - margin) - 5, self.wavelength_aa[-1] * (1 + margin) + 5
        lib_lo, lib_hi = ssp.wavelength_aa[0], ssp.wavelength_aa[-1]
        if lo < lib_lo or hi > lib_hi:
            raise ValueError(
                f"the spectral window {self.wavelength_aa[0]:.0f}-{self.wavelength_aa[-1]:.0f} A (+ kinematic "
                f"margins: {lo:.0f}-{hi:.0f} A) lies outside the SSP library ({lib_lo:.0f}-{lib_hi:.0f} A): "
                "check trainset.wavelength and ssp.wavelength_range_aa"
            )

        average = bin_average_matrix(ssp.ages_yr, self.edges_yr)  # (n_bins, n_age)
        # (n_bins, n_Z, n_lib), float64: bin-averaged spectra per unit mass formed
        bins_full = np.einsum("ba,zal->bzl", average, ssp.flux.astype(np.float64), optimize=True)
        self.bin_surviving_fraction = average @ ssp.surviving_mass_fraction.T  # (n_bins, n_Z)
        self.bin_age_yr = 0.5 * (self.edges_yr[1:] + self.edges_yr[:-1])
        self.young = self.edges_yr[1:] <= birth_cloud_age_yr * (1 + 1e-9)

        # photometry on the library grid, reduced to the filters' support
        if self.filters:
            operator = PhotometryOperator(ssp.wavelength_aa, load_throughputs(self.filters))
            weights = operator.mean_flambda_weights
            support = np.flatnonzero(np.any(weights != 0, axis=1))
            sl = slice(support[0], support[-1] + 1)
            self._phot_weights = weights[sl]
            #: Library wavelengths (A) that the bands' curves span: the grid of :meth:`band_means`.
            self.photometry_wavelength_aa = ssp.wavelength_aa[sl]
            self._phot_bins = bins_full[..., sl]
            self._phot_k = attenuation_curve(ssp.wavelength_aa[sl], dust_law)
        window = (ssp.wavelength_aa >= lo) & (ssp.wavelength_aa <= hi)
        lib_wave = ssp.wavelength_aa[window]
        broadened = SSPLibrary(
            flux=bins_full[..., window].reshape(self.n_bins * self.logzsol.size, 1, -1),
            ages_yr=np.array([1.0]),
            metallicity_z=np.arange(self.n_bins * self.logzsol.size, dtype=float),
            logzsol=np.zeros(self.n_bins * self.logzsol.size),
            wavelength_aa=lib_wave,
            surviving_mass_fraction=np.ones((self.n_bins * self.logzsol.size, 1)),
            fwhm_aa=ssp.fwhm_aa[window],
        ).broadened(lsf_fwhm_aa)
        self.log_wave = log_lambda_grid(lib_wave[0] + 1, lib_wave[-1] - 1, velscale_kms)
        spline = scipy.interpolate.make_interp_spline(lib_wave, broadened.flux[:, 0, :], k=3, axis=-1)
        self._log_bins = spline(self.log_wave).reshape(self.n_bins, self.logzsol.size, -1)
        self._log_k = attenuation_curve(self.log_wave, dust_law)
        position = np.log(self.wavelength_aa / self.log_wave[0]) / (velscale_kms / C_KMS)
        self._to_output = cubic_resampling_matrix(self.log_wave.size, position)
        self._nfft = scipy.fft.next_fast_len(self.log_wave.size, real=True)
        norm = (self.log_wave >= norm_window_aa[0]) & (self.log_wave <= norm_window_aa[1])
        if not norm.any():
            raise ValueError(f"trainset.norm_window_aa {norm_window_aa} lies outside the spectral window")
        self._norm_bins = self._log_bins[..., norm].mean(-1)  # (n_bins, n_Z) per unit mass
        self._norm_k = self._log_k[norm].mean()

    def metallicity_weights(self, logz: np.ndarray) -> np.ndarray:
        """(n, n_bins, n_Z) weights of linear interpolation in log Z (clipped to the library)."""
        grid = self.logzsol
        logz = np.clip(np.asarray(logz, dtype=float), grid[0], grid[-1])
        i = np.clip(np.searchsorted(grid, logz) - 1, 0, grid.size - 2)
        w = (logz - grid[i]) / (grid[i + 1] - grid[i])
        out = np.zeros(logz.shape + (grid.size,))
        np.put_along_axis(out, i[..., None], (1 - w)[..., None], axis=-1)
        np.put_along_axis(out, (i + 1)[..., None], w[..., None], axis=-1)
        return out

    def _attenuated(
        self, coeff: np.ndarray, basis: np.ndarray, k: np.ndarray, av: np.ndarray, bc_extra: np.ndarray
    ) -> np.ndarray:
        """sum over bins and Z of coeff * basis, each group of bins with its own attenuation."""
        n = coeff.shape[0]
        total = 0.0
        for group, factor in ((self.young, 1.0 + bc_extra), (~self.young, np.ones_like(av))):
            if not group.any():
                continue
            part = coeff[:, group].reshape(n, -1) @ basis[group].reshape(-1, basis.shape[-1])
            total = total + part * np.exp(-LN10_OVER_2P5 * (av * factor)[:, None] * k[None, :])
        return total

    def model(
        self,
        mass_fractions: np.ndarray,
        logz: np.ndarray,
        av: np.ndarray,
        sigma_kms: np.ndarray,
        velocity_kms: np.ndarray | None = None,
        birth_cloud_extra: np.ndarray | None = None,
    ) -> ModelOutput:
        """Model a batch of galaxies.

        Parameters
        ----------
        mass_fractions : (n, n_bins) mass fraction formed per bin (sum 1), youngest bin first.
        logz : (n, n_bins) log10(Z/Z_sun) per bin.
        av : (n,) V-band attenuation A_V, mag.
        sigma_kms : (n,) line-of-sight velocity dispersion, km/s (on top of the LSF).
        velocity_kms : (n,) residual line-of-sight velocity, km/s (default 0).
        birth_cloud_extra : (n,) extra A_V of the young bins in units of A_V (default 0).
        """
        x = np.asarray(mass_fractions, dtype=float)
        n = x.shape[0]
        av = np.asarray(av, dtype=float).reshape(n)
        velocity = np.zeros(n) if velocity_kms is None else np.asarray(velocity_kms, float).reshape(n)
        bc = np.zeros(n) if birth_cloud_extra is None else np.asarray(birth_cloud_extra, float).reshape(n)
        coeff = x[..., None] * self.metallicity_weights(logz)  # (n, n_bins, n_Z)

        log_flux = self._attenuated(coeff, self._log_bins, self._log_k, av, bc)
        spectrum = scipy.fft.rfft(log_flux, n=self._nfft, axis=1)
        freq = scipy.fft.rfftfreq(self._nfft)
        sigma_pix = np.asarray(sigma_kms, float).reshape(n, 1) / self.velscale_kms
        shift_pix = velocity.reshape(n, 1) / self.velscale_kms
        spectrum *= np.exp(-2 * np.pi**2 * sigma_pix**2 * freq**2 - 2j * np.pi * freq * shift_pix)
        log_flux = scipy.fft.irfft(spectrum, n=self._nfft, axis=1)[:, : self.log_wave.size]
        flux = np.asarray(log_flux @ self._to_output)

        young_factor = np.where(self.young[None, :], (1 + bc)[:, None], 1.0)
        bin_light = (coeff * self._norm_bins[None]).sum(-1) * np.exp(
            -LN10_OVER_2P5 * av[:, None] * young_factor * self._norm_k
        )
        if self.filters:
            phot = self._attenuated(coeff, self._phot_bins, self._phot_k, av, bc) @ self._phot_weights
        else:
            phot = np.zeros((n, 0))
        surviving = (coeff * self.bin_surviving_fraction[None]).sum((1, 2))
        return ModelOutput(flux=flux, photometry=phot, bin_light=bin_light, surviving_fraction=surviving)

    def band_means(self, flux: np.ndarray) -> np.ndarray:
        """Photon-weighted mean f_lambda (n, n_filters) in the model's bands of light other than
        the stars' (n, len(photometry_wavelength_aa)), in its units, as :meth:`model` measures
        its photometry."""
        return np.asarray(flux, dtype=float) @ self._phot_weights
