"""Physics of the forward model on an analytic SSP library whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline.constants import C_KMS
from sfh_pipeline.dust import attenuation_curve, calzetti2000_k
from sfh_pipeline.filters import PHANGS_FILTERS, PhotometryOperator, load_throughputs
from sfh_pipeline.forward import (
    ForwardModel,
    bin_average_matrix,
    validate_age_bin_edges,
)
from sfh_pipeline.instrument import linear_grid
from sfh_pipeline.spectral import pixel_edges

from .support.ssp_fixtures import EDGES, absorption, analytic_library, continuum


@pytest.fixture(scope="module")
def library():
    return analytic_library()


@pytest.fixture(scope="module")
def model(library):
    return ForwardModel(library, EDGES, filters=PHANGS_FILTERS, lsf_fwhm_aa=lambda lam: np.full_like(lam, 2.5))


def one_hot(n_bins, k, n=1):
    x = np.zeros((n, n_bins))
    x[:, k] = 1.0
    return x


def test_bin_average_is_exact_for_linear_age_dependence(library):
    average = bin_average_matrix(library.ages_yr, EDGES)
    np.testing.assert_allclose(average.sum(1), 1.0, rtol=1e-12)
    ages = library.ages_yr
    # f(t) = t is linear, so the bin mean is the midpoint (beyond the youngest SSP f is constant)
    expected = 0.5 * (EDGES[1:] + EDGES[:-1])
    expected[0] = (ages[0] * (ages[0] - 0) + 0.5 * (EDGES[1] ** 2 - ages[0] ** 2)) / EDGES[1]
    np.testing.assert_allclose(average @ ages, expected, rtol=1e-10)


def test_single_bin_reproduces_the_library_spectrum_of_that_age_range(model, library):
    k = 11  # 2-3.5 Gyr
    out = model.model(one_hot(16, k), np.full((1, 16), -0.3), av=[0.0], sigma_kms=[0.0])
    lam = model.wavelength_aa
    mid = 0.5 * (EDGES[k] + EDGES[k + 1])
    # library FWHM = LSF, so no broadening; the bin mean of this slowly varying continuum is
    # its value at mid to < 0.05 %; the rest is resampling error on lines of sigma = 1 pixel
    expected = continuum(lam, mid, -0.3) * absorption(lam, 0.3)
    np.testing.assert_allclose(out.flux[0], expected, rtol=5e-3)
    assert np.median(np.abs(out.flux[0] / expected - 1)) < 5e-4
    np.testing.assert_allclose(out.surviving_fraction, 1 - 0.4 * mid / library.ages_yr.max(), rtol=1e-6)


def test_metallicity_is_interpolated_in_log_z(model):
    lo = model.model(one_hot(16, 8), np.full((1, 16), -1.0), [0.0], [0.0]).flux
    hi = model.model(one_hot(16, 8), np.full((1, 16), -0.3), [0.0], [0.0]).flux
    mid = model.model(one_hot(16, 8), np.full((1, 16), -0.65), [0.0], [0.0]).flux
    np.testing.assert_allclose(mid, 0.5 * (lo + hi), rtol=1e-10)
    clipped = model.model(one_hot(16, 8), np.full((1, 16), 5.0), [0.0], [0.0]).flux
    top = model.model(one_hot(16, 8), np.full((1, 16), 0.2), [0.0], [0.0]).flux
    np.testing.assert_allclose(clipped, top)


def test_dust_identity_and_monotonic_reddening(model):
    rng = np.random.default_rng(3)
    x = rng.dirichlet(np.ones(16), 1)
    z = np.full((1, 16), -0.3)
    ratios = []
    for av in (0.0, 0.5, 1.0, 2.0):
        out = model.model(x, z, [av], [100.0])
        ratios.append(out.flux[0, :100].mean() / out.flux[0, -100:].mean())
        if av == 0.0:
            base = out
    no_dust = model.model(x, z, [0.0], [100.0], birth_cloud_extra=[0.7])
    np.testing.assert_allclose(no_dust.flux, base.flux)
    assert np.all(np.diff(ratios) < 0)
    # for a single old bin, the attenuation is exactly the Calzetti law
    old = one_hot(16, 14)
    f0 = model.model(old, z, [0.0], [0.0]).flux[0]
    f1 = model.model(old, z, [1.0], [0.0]).flux[0]
    k = calzetti2000_k(model.wavelength_aa) / 4.05
    np.testing.assert_allclose(-2.5 * np.log10(f1 / f0), k, rtol=2e-3)


def test_birth_cloud_attenuates_only_young_bins(model):
    z = np.full((1, 16), 0.0)
    young, old = one_hot(16, 0), one_hot(16, 13)
    for x, changes in ((young, True), (old, False)):
        plain = model.model(x, z, [1.0], [0.0]).flux
        extra = model.model(x, z, [1.0], [0.0], birth_cloud_extra=[1.0]).flux
        assert (not np.allclose(plain, extra)) is changes


def test_broadening_conserves_flux_and_velocity_shifts(model):
    x, z = one_hot(16, 12), np.full((1, 16), 0.2)
    sharp = model.model(x, z, [0.0], [0.0]).flux[0]
    broad = model.model(x, z, [0.0], [200.0]).flux[0]
    inner = slice(200, -200)
    assert broad[inner].sum() == pytest.approx(sharp[inner].sum(), rel=1e-3)
    assert np.std(np.diff(broad)) < 0.5 * np.std(np.diff(sharp))  # lines are smeared
    shifted = model.model(x, z, [0.0], [0.0], velocity_kms=[150.0]).flux[0]
    rest = model.wavelength_aa / (1 + 150.0 / C_KMS)
    mid = 0.5 * (EDGES[12] + EDGES[13])
    expected = continuum(rest, mid, 0.2) * absorption(rest, 0.3)
    np.testing.assert_allclose(shifted[inner], expected[inner], rtol=5e-3)


def test_photometry_agrees_with_the_filters_stage(model, library):
    rng = np.random.default_rng(7)
    x = rng.dirichlet(np.ones(16), 3)
    z = rng.uniform(-1, 0.2, (3, 16))
    av = np.array([0.0, 0.7, 1.5])
    out = model.model(x, z, av, [80.0, 150.0, 30.0])
    # independent: full spectrum on the library grid, attenuated, through the filters
    average = bin_average_matrix(library.ages_yr, EDGES)
    weights = model.metallicity_weights(z)
    spectra = np.einsum("nb,nbz,ba,zal->nl", x, weights, average, library.flux.astype(float))
    spectra *= 10 ** (-0.4 * av[:, None] * attenuation_curve(library.wavelength_aa)[None, :])
    expected = PhotometryOperator(library.wavelength_aa, load_throughputs(PHANGS_FILTERS)).mean_flambda(spectra)
    np.testing.assert_allclose(out.photometry, expected, rtol=1e-6)


def test_bad_settings_name_the_key(library):
    with pytest.raises(ValueError, match="age_bin_edges_yr.*oldest"):
        validate_age_bin_edges([0, 1e9, 2e10], library.ages_yr)
    with pytest.raises(ValueError, match="youngest age"):
        validate_age_bin_edges([0, 1e5, 1e9], library.ages_yr)
    with pytest.raises(ValueError, match="increase"):
        validate_age_bin_edges([0, 1e9, 1e8], library.ages_yr)
    with pytest.raises(ValueError, match="outside the SSP library"):
        ForwardModel(library, EDGES, wavelength_aa=linear_grid(4800, 9990, 1.25))
    with pytest.raises(ValueError, match="unknown dust law"):
        ForwardModel(library, EDGES, dust_law="calzetti1994")
    with pytest.raises(ValueError, match="Unknown filter|unknown filter|not in"):
        ForwardModel(library, EDGES, filters=("wfc3-uvis_f999w",))


def test_pixel_edges_helper_is_consistent():
    assert pixel_edges(np.array([1.0, 2.0, 4.0])).tolist() == [0.5, 1.5, 3.0, 5.0]
