"""HST images onto the MUSE spaxel grid: Gaussian PSF matching, then flux-conserving reprojection.

The MUSE PSF (the "copt" cubes: 0.56-1.25 arcsec FWHM) is far broader than HST's (~0.08-0.1
arcsec), so each HST image is convolved with the Gaussian of FWHM sqrt(FWHM_MUSE^2 -
FWHM_HST^2) (astropy.convolution; NaNs interpolated over, then restored), and then
reprojected with ``reproject.reproject_exact`` (exact polygon overlap, which conserves
surface brightness; multiplying by the pixel-area ratio turns it into flux per spaxel).

Errors: the convolved variance is the variance convolved with the squared kernel (independent
HST pixels); reprojection then averages about ``area ratio`` pixels per spaxel, so the
variance of the spaxel's summed flux is the reprojected variance times the area ratio. The
HST drizzle correlates neighbouring pixels, which makes these errors lower limits.
"""

from __future__ import annotations

import numpy as np
from astropy.convolution import Gaussian2DKernel, convolve_fft
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from .instrument import FWHM_PER_SIGMA


def pixel_scale_arcsec(wcs: WCS) -> float:
    """Mean pixel side of a celestial WCS, arcsec."""
    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def match_psf(
    image: np.ndarray, variance: np.ndarray, pixel_arcsec: float, fwhm_from_arcsec: float, fwhm_to_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """Convolve an image (and its variance) from one Gaussian PSF FWHM to a broader one.

    Parameters
    ----------
    image, variance : (ny, nx) arrays; NaN marks pixels without data.
    pixel_arcsec : pixel size, arcsec.
    fwhm_from_arcsec, fwhm_to_arcsec : PSF FWHM of the image and the target, arcsec.

    Returns
    -------
    The convolved image and variance (same units); pixels that were NaN stay NaN.
    """
    if fwhm_to_arcsec < fwhm_from_arcsec:
        raise ValueError(
            f"the target PSF ({fwhm_to_arcsec} arcsec) is sharper than the image's ({fwhm_from_arcsec} arcsec)"
        )
    sigma_pix = np.sqrt(fwhm_to_arcsec**2 - fwhm_from_arcsec**2) / FWHM_PER_SIGMA / pixel_arcsec
    if sigma_pix < 1e-3:
        return image.copy(), variance.copy()
    kernel = Gaussian2DKernel(sigma_pix)
    kernel.normalize("integral")
    bad = ~np.isfinite(image)
    smoothed = convolve_fft(
        image,
        kernel,
        nan_treatment="interpolate",
        normalize_kernel=True,
        boundary="fill",
        fill_value=0.0,
        allow_huge=True,
    )
    kernel_sq = kernel.array**2
    var = convolve_fft(
        np.where(bad, 0.0, variance),
        kernel_sq,
        normalize_kernel=False,
        boundary="fill",
        fill_value=0.0,
        allow_huge=True,
    )
    smoothed[bad] = np.nan
    var[bad] = np.nan
    return smoothed, var


def reproject_flux(
    image: np.ndarray, variance: np.ndarray, wcs_in: WCS, wcs_out: WCS, shape_out: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Flux per output pixel (and its variance) of an image given as flux per input pixel.

    ``reproject_exact`` conserves surface brightness (flux per input pixel averaged over the
    overlap); times the output/input pixel-area ratio it is the flux falling in each output
    pixel. Output pixels not fully covered by the input are NaN.
    """
    from reproject import reproject_exact

    ratio = (pixel_scale_arcsec(wcs_out) / pixel_scale_arcsec(wcs_in)) ** 2
    flux, footprint = reproject_exact((image, wcs_in.celestial), wcs_out.celestial, shape_out=shape_out)
    var, _ = reproject_exact((variance, wcs_in.celestial), wcs_out.celestial, shape_out=shape_out)
    partial = footprint < 1.0 - 1e-6
    flux[partial] = np.nan
    var[partial] = np.nan
    return flux * ratio, var * ratio
