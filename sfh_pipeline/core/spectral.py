"""Spectra on any wavelength grid: pixel edges, flux-conserving Gaussian broadening, and the
nebular emission lines that are masked in them."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .constants import C_KMS
from .instrument import FWHM_PER_SIGMA

#: The nebular emission lines masked in stellar spectra of the training window (4800-7000 A):
#: rest-frame wavelengths in **air**, Angstrom, like every wavelength of the pipeline (SSP
#: libraries, MUSE cubes and the network's grid are all in air). One table for the training
#: set's mask (:func:`emission_line_mask`, hence what every model was trained and predicts
#: with; model files record it as ``emission_lines_aa``), the velocity measurement
#: (:func:`sfh_pipeline.kinematics.emission_line_mask`), the pPXF reference fits and the mock
#: galaxies' gas lines. The lines: H beta, [O III] 4959/5007, [N I] 5198/5200, He I 5876,
#: [O I] 6300/6364, [N II] 6548/6583, H alpha, [S II] 6716/6731: the lines of ionised gas
#: in this range that are strong enough to bias a stellar fit. [O I] 6364 is in because its
#: flux is a third of [O I] 6300's (same upper level), so it is strong wherever 6300 is (the
#: velocity measurement had left it out until both used this table). He I 6678 is not
#: masked (see ``sfh_pipeline.trainset.NEBULAR_LINES_AA``).
EMISSION_LINES_AA = {
    "Hbeta": 4861.33,
    "[OIII]4959": 4958.91,
    "[OIII]5007": 5006.84,
    "[NI]5198": 5197.90,
    "[NI]5200": 5200.26,
    "HeI5876": 5875.62,
    "[OI]6300": 6300.30,
    "[OI]6364": 6363.78,
    "[NII]6548": 6548.05,
    "Halpha": 6562.80,
    "[NII]6583": 6583.45,
    "[SII]6716": 6716.44,
    "[SII]6731": 6730.82,
}
#: Bits of the pixel masks of spectra on the network's grid (training set and prediction):
#: emission line (:func:`emission_line_mask`) and AO laser-notch gap.
MASK_EMISSION, MASK_LASER_GAP = 1, 2


def emission_line_mask(wavelength_aa: np.ndarray, halfwidth_kms: float) -> np.ndarray:
    """Boolean mask of rest-frame pixels within ``halfwidth_kms`` of a line of :data:`EMISSION_LINES_AA`."""
    lam = np.asarray(wavelength_aa, dtype=float)[:, None]
    lines = np.array(list(EMISSION_LINES_AA.values()))[None, :]
    return np.any(np.abs(lam / lines - 1) * C_KMS <= halfwidth_kms, axis=1)


def pixel_edges(wavelength_aa: np.ndarray) -> np.ndarray:
    """Pixel boundaries (Angstrom) of a monotonically increasing grid of pixel centres.

    Inner edges are midpoints; the outer edges mirror the first and last half-steps.
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    if lam.ndim != 1 or lam.size < 2 or np.any(np.diff(lam) <= 0):
        raise ValueError("wavelength grid must be 1-D, strictly increasing, with >= 2 pixels")
    mid = 0.5 * (lam[1:] + lam[:-1])
    return np.concatenate([[2 * lam[0] - mid[0]], mid, [2 * lam[-1] - mid[-1]]])


def gaussian_kernel_matrix(
    wavelength_aa: np.ndarray, sigma_aa: np.ndarray | float, truncate: float = 5.0
) -> scipy.sparse.csr_matrix:
    """Sparse operator that convolves f_lambda with a Gaussian of varying width.

    Each input pixel ``j`` spreads its flux ``f_j * width_j`` over the output pixels with a
    Gaussian of standard deviation ``sigma_aa[j]`` centred on it, sampled at the output
    pixel centres (so the added variance is sigma**2, with no extra pixel-box term) and
    normalised per input pixel: the integrated flux ``sum(f * width)`` is conserved exactly
    on any (non-uniform) grid, no log-lambda resampling is needed, and a kernel much
    narrower than a pixel degrades gracefully to the identity.

    Parameters
    ----------
    wavelength_aa : numpy.ndarray
        Pixel centres in Angstrom, strictly increasing, shape (n,).
    sigma_aa : numpy.ndarray or float
        Gaussian standard deviation per input pixel in Angstrom, shape (n,) or scalar.
        Zero means no broadening.
    truncate : float
        Kernel half-width in units of sigma.

    Returns
    -------
    scipy.sparse.csr_matrix
        Matrix ``K`` of shape (n, n) with ``f_out = K @ f_in`` for f_lambda in any units.
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    edges = pixel_edges(lam)
    widths = np.diff(edges)
    n = lam.size
    sigma = np.broadcast_to(np.asarray(sigma_aa, dtype=float), lam.shape)
    if np.any(~np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError("sigma_aa must be finite and non-negative")

    lo = np.searchsorted(edges, lam - truncate * sigma, side="right") - 1
    hi = np.searchsorted(edges, lam + truncate * sigma, side="left")
    lo = np.clip(lo, 0, n - 1)
    hi = np.clip(hi, lo + 1, n)
    counts = hi - lo
    cols = np.repeat(np.arange(n), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = lo[cols] + offsets

    sig = sigma[cols]
    broad = sig > 0
    offset = (lam[rows] - lam[cols]) / np.where(broad, sig, 1.0)
    frac = np.where(broad, np.exp(-0.5 * offset**2) * widths[rows], (rows == cols).astype(float))
    frac /= np.bincount(cols, weights=frac, minlength=n)[cols]
    values = frac * widths[cols] / widths[rows]
    return scipy.sparse.csr_matrix((values, (rows, cols)), shape=(n, n))


def apply_kernel(kernel: scipy.sparse.spmatrix, flux: np.ndarray) -> np.ndarray:
    """Apply a (n, n) kernel to spectra of shape (..., n); returns the same shape and dtype."""
    flux = np.asarray(flux)
    flat = flux.reshape(-1, flux.shape[-1])
    out = (kernel @ flat.T).T
    return np.asarray(out, dtype=flux.dtype).reshape(flux.shape)


def broaden_to_fwhm(
    wavelength_aa: np.ndarray,
    flux: np.ndarray,
    fwhm_in_aa: np.ndarray | float,
    fwhm_out_aa: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """Degrade spectra from resolution ``fwhm_in_aa`` to ``fwhm_out_aa`` (both FWHM in Angstrom).

    The Gaussian that is applied has the quadrature difference
    sigma = sqrt(FWHM_out**2 - FWHM_in**2) / 2.3548 at every pixel. Where the target is
    sharper than the input, nothing can be done: the input is left as it is there.

    Parameters
    ----------
    wavelength_aa : numpy.ndarray
        Pixel centres in Angstrom, shape (n,).
    flux : numpy.ndarray
        f_lambda spectra, shape (..., n), any units.
    fwhm_in_aa, fwhm_out_aa : numpy.ndarray or float
        Input and target FWHM in Angstrom per pixel (or scalars).

    Returns
    -------
    flux_out : numpy.ndarray
        Broadened spectra, same shape and dtype as ``flux``.
    fwhm_effective_aa : numpy.ndarray
        Resolution of the output, max(FWHM_in, FWHM_out), in Angstrom, shape (n,).
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    fin = np.broadcast_to(np.asarray(fwhm_in_aa, dtype=float), lam.shape)
    fout = np.broadcast_to(np.asarray(fwhm_out_aa, dtype=float), lam.shape)
    sigma = np.sqrt(np.clip(fout**2 - fin**2, 0.0, None)) / FWHM_PER_SIGMA
    return apply_kernel(gaussian_kernel_matrix(lam, sigma), flux), np.maximum(fin, fout)


def velocity_to_redshift(velocity_kms):
    """Redshift z of line-of-sight velocities (km/s), in the pipeline's convention
    v = c ln(1 + z), i.e. 1 + z = exp(v / c).

    It is pPXF's: a velocity is a pure shift in ln lambda (lambda_obs = lambda_rest exp(v / c)),
    so velocities add like shifts do. It is neither the optical v = cz nor the relativistic
    Doppler formula (at z = 0.01 it gives v = 2983.03 km/s, cz = 2997.92 km/s). A number gives a
    NumPy float, an array an array of the same shape.
    """
    return np.expm1(np.asarray(velocity_kms, dtype=float) / C_KMS)


def redshift_to_velocity(z):
    """Line-of-sight velocity (km/s) of redshifts ``z``: v = c ln(1 + z), the inverse of
    :func:`velocity_to_redshift` (see there for the convention)."""
    return C_KMS * np.log1p(np.asarray(z, dtype=float))


def velocity_sigma_to_aa(wavelength_aa: np.ndarray, sigma_kms: float) -> np.ndarray:
    """Gaussian sigma in Angstrom of a line-of-sight velocity dispersion ``sigma_kms`` (km/s)."""
    return np.asarray(wavelength_aa, dtype=float) * (sigma_kms / C_KMS)


#: Strongest night-sky emission lines and telluric bands in the MUSE range (observed air
#: wavelengths, A): sky-subtraction residuals there are masked in the reference fits.
SKY_LINES_AA = (
    5577.34,
    5889.95,
    5895.92,
    6300.30,
    6363.78,
    6498.73,
    6533.04,
    6553.62,
    6863.96,
    6923.19,
    7276.41,
    7316.28,
    7340.89,
    7369.25,
    7401.69,
    7524.12,
    7571.75,
    7750.64,
    7794.11,
    7821.50,
    7913.71,
    7993.33,
    8344.60,
    8399.17,
    8430.17,
    8465.36,
    8827.10,
    8885.85,
    8919.63,
    8958.10,
)
TELLURIC_BANDS_AA = ((6864.0, 6935.0), (7160.0, 7340.0), (7590.0, 7700.0))
SKY_HALF_WIDTH_AA = 3.0


def sky_mask(wave_obs_aa: np.ndarray) -> np.ndarray:
    """True for observed wavelengths within :data:`SKY_HALF_WIDTH_AA` of a bright sky line or
    inside a telluric absorption band."""
    lam = np.asarray(wave_obs_aa, dtype=float)
    bad = np.any(np.abs(lam[:, None] - np.array(SKY_LINES_AA)[None, :]) <= SKY_HALF_WIDTH_AA, axis=1)
    for lo, hi in TELLURIC_BANDS_AA:
        bad |= (lam >= lo) & (lam <= hi)
    return bad
