"""Gaussian broadening keeps flux and reaches the expected width; the MUSE LSF."""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline.instrument import FWHM_PER_SIGMA, linear_grid, muse_lsf_fwhm_aa
from sfh_pipeline.spectral import (
    broaden_to_fwhm,
    gaussian_kernel_matrix,
    redshift_to_velocity,
    velocity_sigma_to_aa,
    velocity_to_redshift,
)


def gaussian_line(wave, centre, sigma, flux=1.0):
    return flux * np.exp(-0.5 * ((wave - centre) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)


def line_moments(wave, f):
    weights = f * np.gradient(wave)
    total = weights.sum()
    mean = (weights * wave).sum() / total
    return total, mean, np.sqrt((weights * (wave - mean) ** 2).sum() / total)


@pytest.mark.parametrize("grid", ["linear", "nonuniform"])
def test_gaussian_line_keeps_flux_and_gets_expected_width(grid):
    if grid == "linear":
        wave = linear_grid(5000.0, 6000.0, 0.9)
    else:  # sampling changes from 0.5 to 1.7 A across the line
        wave = np.cumsum(np.linspace(0.5, 1.7, 1200)) + 4900.0
    fwhm_in, fwhm_out = 2.5, 6.0
    line = gaussian_line(wave, 5500.0, fwhm_in / FWHM_PER_SIGMA, flux=3.0)
    out, effective = broaden_to_fwhm(wave, line, fwhm_in, fwhm_out)
    total, mean, sigma = line_moments(wave, out)
    assert total == pytest.approx(3.0, rel=1e-6)
    assert mean == pytest.approx(5500.0, abs=0.01)
    # sampling adds (pixel width)^2/12 to the measured variance; allow that, not more
    assert sigma == pytest.approx(fwhm_out / FWHM_PER_SIGMA, rel=0.02)
    np.testing.assert_array_equal(effective, fwhm_out)


def test_wavelength_dependent_target_and_no_sharpening():
    wave = linear_grid(4750.0, 9350.0, 1.25)
    target = muse_lsf_fwhm_aa(wave)
    for centre in (5000.0, 8500.0):
        line = gaussian_line(wave, centre, 1.5 / FWHM_PER_SIGMA)  # 1.5 A FWHM, below MUSE
        out, _ = broaden_to_fwhm(wave, line, 1.5, target)
        _, _, sigma_in = line_moments(wave, line)
        _, _, sigma = line_moments(wave, out)
        kernel_variance = (muse_lsf_fwhm_aa(centre) ** 2 - 1.5**2) / FWHM_PER_SIGMA**2
        assert sigma == pytest.approx(np.sqrt(sigma_in**2 + kernel_variance), rel=0.02)
    # a library coarser than the target is left as it is
    line = gaussian_line(wave, 6000.0, 2.0)
    out, effective = broaden_to_fwhm(wave, line, 5.0, target)
    np.testing.assert_allclose(out, line, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(effective, 5.0)


def test_kernel_conserves_flux_exactly_for_any_sigma_and_batches():
    rng = np.random.default_rng(1)
    wave = np.sort(rng.uniform(3000, 4000, 700))
    kernel = gaussian_kernel_matrix(wave, rng.uniform(0, 3, wave.size))
    flux = rng.uniform(0, 1, (3, 2, wave.size)).astype(np.float32)
    out = (kernel @ flux.reshape(-1, wave.size).T).T.reshape(flux.shape)
    widths = np.diff(
        np.concatenate(
            [
                [2 * wave[0] - (wave[0] + wave[1]) / 2],
                (wave[1:] + wave[:-1]) / 2,
                [2 * wave[-1] - (wave[-1] + wave[-2]) / 2],
            ]
        )
    )
    np.testing.assert_allclose((out * widths).sum(-1), (flux * widths).sum(-1), rtol=1e-5)


def test_zero_sigma_is_identity_and_bad_sigma_fails():
    wave = linear_grid(5000.0, 5100.0, 1.0)
    np.testing.assert_allclose(gaussian_kernel_matrix(wave, 0.0).toarray(), np.eye(wave.size))
    with pytest.raises(ValueError):
        gaussian_kernel_matrix(wave, -1.0)


def test_muse_lsf_values_from_bacon_2017():
    assert muse_lsf_fwhm_aa(4800.0) == pytest.approx(2.98, abs=0.02)
    assert muse_lsf_fwhm_aa(7000.0) == pytest.approx(2.48, abs=0.02)
    assert muse_lsf_fwhm_aa(9300.0) == pytest.approx(2.57, abs=0.02)
    assert linear_grid(4800.0, 7000.0, 1.25).size == 1761


def test_velocity_sigma_in_angstrom():
    assert velocity_sigma_to_aa(np.array([5000.0]), 299.792458)[0] == pytest.approx(5.0)


def test_emission_line_mask_covers_every_line_of_the_one_table():
    from sfh_pipeline import kinematics
    from sfh_pipeline.spectral import EMISSION_LINES_AA, emission_line_mask

    wave = linear_grid(4800.0, 7000.0, 1.25)
    rest = emission_line_mask(wave, 400.0)
    at_zero_velocity = kinematics.emission_line_mask(wave, 0.0, 400.0)
    for line in EMISSION_LINES_AA.values():
        pixel = np.argmin(np.abs(wave - line))
        assert rest[pixel] and at_zero_velocity[pixel], line
    assert "[OI]6364" in EMISSION_LINES_AA
    continuum = np.argmin(np.abs(wave - 5500.0))
    assert not rest[continuum] and not at_zero_velocity[continuum]


def test_velocity_and_redshift_follow_v_equals_c_ln_1_plus_z():
    """The convention of the whole pipeline (pPXF's): z = 0.01 is 299792.458 ln(1.01) =
    2983.0341 km/s, not cz = 2997.9246 km/s; the two agree to first order only."""
    assert redshift_to_velocity(0.01) == pytest.approx(2983.0341, abs=1e-4)
    assert velocity_to_redshift(299792.458 * np.log(1.01)) == pytest.approx(0.01, rel=1e-14)
    assert velocity_to_redshift(2997.92458) == pytest.approx(0.01005016708417, rel=1e-12)  # e^0.01 - 1, not 0.01
    # a velocity is a shift in ln lambda: velocities add where 1 + z multiply
    v1, v2 = 1234.5, -876.0
    assert (1 + velocity_to_redshift(v1)) * (1 + velocity_to_redshift(v2)) == pytest.approx(
        1 + velocity_to_redshift(v1 + v2), rel=1e-15
    )
    assert velocity_to_redshift(0.0) == 0.0 and redshift_to_velocity(0.0) == 0.0


def test_velocity_and_redshift_round_trip_for_numbers_and_arrays():
    velocity = np.array([[-300.0, 0.0, 1e-3], [1500.0, 24700.0, 1e5]])
    z = velocity_to_redshift(velocity)
    assert z.shape == velocity.shape and np.all(np.sign(z) == np.sign(velocity))
    np.testing.assert_allclose(redshift_to_velocity(z), velocity, rtol=1e-14, atol=1e-12)
    # small velocities keep their digits (no exp(x) - 1 cancellation): z = v / c to first order
    assert velocity_to_redshift(1e-6) == pytest.approx(1e-6 / 299792.458, rel=1e-12)
    assert isinstance(velocity_to_redshift(1000.0), float)
