"""The Galactic foreground correction against the published Fitzpatrick (1999) curve.

Every observed spectrum and HST flux is divided by ``galactic_transmission``: a wrong law,
R_V, sign or a forgotten E(B-V) biases every age and mass of the sample, and nothing
downstream would notice. These tests check numbers, not shapes.
"""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline.dust import correct_galactic_extinction, galactic_transmission

#: F99 Table 4 optical spline anchors: A(lambda)/E(B-V) as functions of R_V (Fitzpatrick 1999,
#: PASP 111, 63), written out here from the paper, not taken from the code under test.
F99_ANCHORS_AA = np.array([6000.0, 5470.0, 4670.0, 4110.0])


def f99_a_over_ebv(rv: float) -> np.ndarray:
    return np.array(
        [
            -0.426 + 1.0044 * rv,
            -0.050 + 1.0016 * rv,
            0.701 + 1.0016 * rv,
            1.208 + 1.0032 * rv - 0.00033 * rv**2,
        ]
    )


def test_transmission_at_the_f99_anchors_for_rv_3p1():
    """The curve is a spline through these points, so the values are exact there:
    T = 10^(-0.4 * A_lambda/E(B-V) * E(B-V)). A(5470)/E(B-V) = 3.055, close to R_V = 3.1."""
    ebv = 0.1
    expected = 10.0 ** (-0.4 * f99_a_over_ebv(3.1) * ebv)
    np.testing.assert_allclose(galactic_transmission(F99_ANCHORS_AA, ebv), expected, rtol=1e-9)
    # the number an astronomer would check by hand: 10^(-0.4 * 3.0550 * 0.1) = 0.75475
    assert galactic_transmission(np.array([5470.0]), ebv)[0] == pytest.approx(0.75475, abs=2e-5)


def test_transmission_of_a_dust_law_checked_by_dust_extinction_between_anchors():
    """Between anchors (and in the red, where MUSE reaches), against dust_extinction's F99 called
    here directly with R_V = 3.1 and E(B-V) converted to A_V = 3.1 E(B-V)."""
    import astropy.units as u
    from dust_extinction.parameter_averages import F99

    wave = np.array([4800.0, 5500.0, 6563.0, 7000.0, 9000.0])
    ebv = 0.05
    a_over_av = F99(Rv=3.1)(1e4 / wave / u.micron)
    np.testing.assert_allclose(galactic_transmission(wave, ebv), 10 ** (-0.4 * a_over_av * 3.1 * ebv), rtol=1e-12)


def test_no_dust_transmits_everything():
    wave = np.linspace(4800.0, 9300.0, 50)
    np.testing.assert_array_equal(galactic_transmission(wave, 0.0), np.ones(wave.size))


def test_doubling_ebv_squares_the_transmission_and_blue_is_dimmed_more():
    """A_lambda is linear in E(B-V), so the transmission of 2 E(B-V) is the square of that of
    E(B-V); extinction falls with wavelength over the optical."""
    wave = np.array([2750.0, 4400.0, 5470.0, 8100.0])
    once = galactic_transmission(wave, 0.07)
    np.testing.assert_allclose(galactic_transmission(wave, 0.14), once**2, rtol=1e-12)
    assert np.all(once < 1) and np.all(np.diff(once) > 0)


@pytest.mark.parametrize("ebv", [-0.01, float("nan")])
def test_negative_or_missing_ebv_is_refused(ebv):
    with pytest.raises(ValueError, match="ebv_galactic"):
        galactic_transmission(np.array([5500.0]), ebv)


def test_fluxes_and_errors_are_corrected_by_the_f99_factor():
    """At the anchors the correction factor is 10^(0.4 A_lambda/E(B-V) E(B-V)), from the paper's
    numbers: 1.2808 at 6000 A for E(B-V) = 0.1. Spectra (wavelength on the last axis) and their
    errors are multiplied by it alike, in any unit; the input is not changed."""
    ebv = 0.1
    factor = 10.0 ** (0.4 * f99_a_over_ebv(3.1) * ebv)
    assert factor[0] == pytest.approx(1.2808, abs=1e-4)
    flux = np.array([[1.0, 2.0, 3.0, 4.0], [5e-17, 6e-17, 7e-17, 8e-17]])
    error = 0.1 * flux
    corrected, corrected_error = correct_galactic_extinction(F99_ANCHORS_AA, ebv, flux, error)
    np.testing.assert_allclose(corrected, flux * factor, rtol=1e-9)
    np.testing.assert_allclose(corrected_error, error * factor, rtol=1e-9)
    assert flux[0, 0] == 1.0
    (only,) = correct_galactic_extinction(F99_ANCHORS_AA, 0.0, flux)
    np.testing.assert_array_equal(only, flux)


def test_fluxes_of_a_band_are_corrected_at_its_pivot():
    """The (n_bins,) fluxes of one HST band: one wavelength (a number), one factor for all."""
    ebv = 0.1
    fluxes, errors = correct_galactic_extinction(5470.0, ebv, np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.3]))
    factor = 10.0 ** (0.4 * (-0.050 + 1.0016 * 3.1) * ebv)
    np.testing.assert_allclose(fluxes, [factor, 2 * factor, 3 * factor], rtol=1e-9)
    np.testing.assert_allclose(errors, [0.1 * factor, 0.2 * factor, 0.3 * factor], rtol=1e-9)
    with pytest.raises(ValueError, match="ebv_galactic"):
        correct_galactic_extinction(5470.0, -0.1, np.ones(3))
