"""PSF matching and reprojection of HST images conserve flux and reach the target resolution."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from sfh_pipeline.instrument import FWHM_PER_SIGMA
from sfh_pipeline.psf import match_psf, pixel_scale_arcsec, reproject_flux


def tan_wcs(scale_arcsec, crpix, crval=(170.06, 12.99)):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = crval
    w.wcs.crpix = crpix
    w.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    return w


def second_moment_fwhm(image, pixel_arcsec):
    y, x = np.indices(image.shape)
    total = np.nansum(image)
    cy, cx = np.nansum(image * y) / total, np.nansum(image * x) / total
    var = np.nansum(image * ((y - cy) ** 2 + (x - cx) ** 2)) / total / 2
    return np.sqrt(var) * FWHM_PER_SIGMA * pixel_arcsec


def test_psf_matching_and_reprojection_conserve_flux():
    hst_pix, muse_pix = 0.04, 0.2
    image = np.zeros((300, 300))
    image[150, 150] = 1000.0  # a point source of 1000 flux units (PSF: a delta)
    image[40, 60] = 200.0
    variance = np.full(image.shape, 4.0)
    matched, matched_var = match_psf(image, variance, hst_pix, 0.0, 0.9)
    assert np.nansum(matched) == pytest.approx(1200.0, rel=1e-6)
    cut = matched[100:200, 100:200]
    assert second_moment_fwhm(cut, hst_pix) == pytest.approx(0.9, rel=0.02)
    hst_wcs = tan_wcs(hst_pix, [150.5, 150.5])
    muse_wcs = tan_wcs(muse_pix, [30.5, 30.5])
    flux, var = reproject_flux(matched, matched_var, hst_wcs, muse_wcs, (60, 60))
    assert np.nansum(flux) == pytest.approx(1200.0, rel=1e-3)
    assert second_moment_fwhm(flux[20:41, 20:41], muse_pix) == pytest.approx(0.9, rel=0.1)
    # variance: convolution with the squared kernel, then summed over the 25 HST pixels per spaxel
    kernel_sq_sum = matched_var[150, 150] / 4.0
    assert var[30, 30] == pytest.approx(4.0 * kernel_sq_sum * 25, rel=0.05)
    assert pixel_scale_arcsec(muse_wcs) == pytest.approx(0.2)


def test_nan_pixels_stay_nan_and_uncovered_spaxels_are_nan():
    image = np.ones((100, 100))
    image[10:20, 10:20] = np.nan
    matched, _ = match_psf(image, np.ones_like(image), 0.04, 0.08, 0.9)
    assert np.all(np.isnan(matched[10:20, 10:20])) and np.isfinite(matched[50, 50])
    flux, _ = reproject_flux(
        matched, np.ones_like(image), tan_wcs(0.04, [50.5, 50.5]), tan_wcs(0.2, [20.5, 20.5]), (40, 40)
    )
    assert np.isnan(flux[0, 0]) and np.isfinite(flux[20, 20])
    with pytest.raises(ValueError, match="sharper"):
        match_psf(image, image, 0.04, 0.9, 0.5)
