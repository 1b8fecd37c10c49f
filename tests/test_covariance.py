"""The covariance of neighbouring spaxels, measured from a cube: known covariances come back."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from sfh_pipeline.covariance import covariance_alpha, error_factor

N_WAVE, SIZE = 1500, 32


def galaxy_spectra(rng: np.random.Generator) -> np.ndarray:
    """(n_wave, ny, nx) continua with 60 absorption lines 30 % deep and 4 pixels wide (sigma),
    in units of the noise sigma: S/N 0.5 per pixel at the left edge, 50 at the right, as a
    galaxy's centre and outskirts."""
    pixels = np.arange(N_WAVE)
    lines = np.zeros(N_WAVE)
    for centre in rng.uniform(20, N_WAVE - 20, 60):
        lines += 0.3 * np.exp(-0.5 * ((pixels - centre) / 4.0) ** 2)
    shape = (1.0 + 0.3 * pixels / N_WAVE) * (1.0 - np.clip(lines, 0, 0.8))
    snr = np.geomspace(0.5, 50.0, SIZE)
    return shape[:, None, None] * np.broadcast_to(snr[None, None, :], (1, SIZE, SIZE))


def test_independent_noise_gives_no_covariance_even_beside_a_bright_galaxy():
    """The bright boxes, where lines would pass for noise, are left out (the whole cube: alpha 0.18)."""
    rng = np.random.default_rng(1)
    flux = galaxy_spectra(rng) + rng.standard_normal((N_WAVE, SIZE, SIZE))
    result = covariance_alpha(flux, np.ones_like(flux), np.ones(N_WAVE, bool))
    assert result["alpha"] < 0.02, result
    # only boxes of S/N <= 10 per pixel: about the left two thirds of the single spaxels, the
    # left third of the 4 x 4 boxes
    assert 0.5 * SIZE**2 < result["n_boxes"][1] < 0.75 * SIZE**2
    assert 8 <= result["n_boxes"][16] < 0.5 * (SIZE // 4) ** 2


def test_spatially_correlated_noise_gives_its_known_excess():
    """White noise smoothed over neighbouring spaxels (a 3 x 3 kernel, as resampling does), with
    STAT = the true variance of each spaxel: a sum of N spaxels is noisier than STAT says by
    sqrt(sum of the covariances over the box / (N var)), computed here from the kernel."""
    rng = np.random.default_rng(2)
    kernel = np.array([[0.05, 0.1, 0.05], [0.1, 1.0, 0.1], [0.05, 0.1, 0.05]])
    white = rng.standard_normal((N_WAVE, SIZE + 2, SIZE + 2))
    noise = scipy.ndimage.convolve(white, kernel[None], mode="constant")[:, 1:-1, 1:-1]
    variance = np.sum(kernel**2)
    flux = galaxy_spectra(rng) + noise
    result = covariance_alpha(flux, np.full_like(flux, variance), np.ones(N_WAVE, bool))

    autocorrelation = scipy.signal.correlate2d(kernel, kernel)  # covariance at each offset
    for side in (2, 4):
        offsets = np.arange(side)[:, None] - np.arange(side)[None, :]
        total = sum(
            autocorrelation[2 + dy, 2 + dx]
            for dy in offsets.ravel()
            for dx in offsets.ravel()
            if abs(dy) <= 2 and abs(dx) <= 2
        )
        expected = np.sqrt(total / (side * side * variance))
        assert result["excess"][side * side] == pytest.approx(expected, rel=0.02), (side, result)
    assert 0.2 < result["alpha"] < 0.5
    np.testing.assert_allclose(error_factor(result["alpha"], [1, 16]), [1.0, 1 + result["alpha"] * np.log10(16)])


def test_too_few_boxes_with_data_give_no_correction():
    rng = np.random.default_rng(3)
    flux = rng.standard_normal((N_WAVE, SIZE, SIZE))
    flux[:, :, 1:] = np.nan  # outside the footprint: only one column of spaxels has data
    result = covariance_alpha(flux, np.ones_like(flux), np.ones(N_WAVE, bool))
    assert result["alpha"] == 0.0 and result["excess"] == {}
    assert result["n_boxes"] == {1: SIZE, 4: 0, 16: 0}
    # a footprint edge does not spoil the rest: NaN spaxels are left out box by box
    flux = rng.standard_normal((N_WAVE, SIZE, SIZE)) * np.sqrt(2.0)
    flux[:, :, :5] = np.nan
    result = covariance_alpha(flux, np.full_like(flux, 2.0), np.ones(N_WAVE, bool))
    assert result["n_boxes"][16] == 6 * (SIZE // 4) and result["alpha"] < 0.03


def test_boxes_measured_in_bands_give_what_one_box_at_a_time_gives(monkeypatch):
    """box_ratios sums and measures boxes in bands of rows; each box's ratio is the one of its
    own summed spectrum through difference_ratio, whatever the band, with gaps and bad spaxels
    left out in row-major order."""
    from sfh_pipeline import covariance

    rng = np.random.default_rng(4)
    flux = rng.normal(1.0, 0.3, (300, 11, 9))
    var = np.full_like(flux, 0.09)
    flux[:, 3, 4] = np.nan
    var[:, 8, 1] = 0.0
    usable = np.ones(300, bool)
    usable[40:60] = False
    good = usable[1:-1] & usable[:-2] & usable[2:]
    monkeypatch.setattr(covariance, "BOXES_AT_ONCE", 3)
    for side in (1, 2, 4):
        ratios, snr = covariance.box_ratios(flux, var, usable, side)
        expected = [
            covariance.difference_ratio(
                flux[:, y : y + side, x : x + side].sum((1, 2)), var[:, y : y + side, x : x + side].sum((1, 2)), good
            )
            for y in range(0, 11 - side + 1, side)
            for x in range(0, 9 - side + 1, side)
            if not (y <= 3 < y + side and x <= 4 < x + side) and not (y <= 8 < y + side and x <= 1 < x + side)
        ]
        np.testing.assert_allclose(ratios, expected, rtol=1e-12)
        assert snr.shape == ratios.shape and np.all(snr > 2.5)
