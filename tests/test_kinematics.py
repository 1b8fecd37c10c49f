"""Stellar velocities by template cross-correlation, on spectra made with the forward model."""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline.constants import C_KMS
from sfh_pipeline.forward import ForwardModel
from sfh_pipeline.instrument import linear_grid
from sfh_pipeline.kinematics import emission_line_mask, measure_velocities
from sfh_pipeline.spectral import EMISSION_LINES_AA
from sfh_pipeline.ssp import load_ssp

SYSTEMIC = 1000.0
OBS_WAVE = linear_grid(4800.0, 7000.0, 1.25)  # a MUSE-like observed grid (1761 pixels)


@pytest.fixture(scope="module")
def forward(analytic_ssp_store):
    """Observed-frame spectra (the forward model's residual velocity = the full velocity)."""
    ssp = load_ssp(analytic_ssp_store)
    galaxies = ForwardModel(ssp, wavelength_aa=OBS_WAVE, max_velocity_kms=1500.0)
    template = ForwardModel(ssp, wavelength_aa=linear_grid(4300.0, 7400.0, 1.0), max_velocity_kms=0.0)
    return galaxies, template


def make_spectra(model, n, *, velocity, sigma, sn=20.0, seed=0):
    """n spectra with random SFHs (the template below is a different population: mismatch)."""
    rng = np.random.default_rng(seed)
    fractions = rng.dirichlet(np.full(model.n_bins, 0.5), n)
    logz = np.repeat(rng.uniform(-0.8, 0.1, (n, 1)), model.n_bins, axis=1)
    out = model.model(fractions, logz, av=rng.uniform(0, 1, n), sigma_kms=sigma, velocity_kms=velocity)
    clean = out.flux
    error = np.median(clean, axis=1, keepdims=True) / sn * np.ones_like(clean)
    return clean + error * rng.standard_normal(clean.shape), error


def old_template(model):
    fractions = np.zeros((1, model.n_bins))
    fractions[0, -4:] = 0.25  # 3.5-14 Gyr
    out = model.model(fractions, np.zeros((1, model.n_bins)), av=np.zeros(1), sigma_kms=np.zeros(1))
    return model.wavelength_aa, out.flux[0]


def test_velocities_recovered_within_10_kms(forward):
    galaxies, template_model = forward
    n = 200
    rng = np.random.default_rng(1)
    true_v = SYSTEMIC + rng.uniform(-300, 300, n)
    sigma = rng.uniform(50, 150, n)
    flux, error = make_spectra(galaxies, n, velocity=true_v, sigma=sigma, sn=20.0)
    t_wave, t_flux = old_template(template_model)

    v, e = measure_velocities(OBS_WAVE, flux, error, t_wave, t_flux, SYSTEMIC)
    assert np.all(np.isfinite(v)) and np.all(e > 0)
    resid = v - true_v
    rms = np.sqrt(np.mean(resid**2))
    assert rms < 10.0, rms
    assert abs(np.mean(resid)) < 3.0
    # the error estimate is honest to within a factor ~1.5
    pull = resid / e
    assert 0.6 < np.std(pull) < 1.6, np.std(pull)


def test_emission_lines_are_masked(forward):
    """Strong gas lines at a different velocity from the stars do not pull the velocity."""
    galaxies, template_model = forward
    n = 40
    rng = np.random.default_rng(2)
    true_v = SYSTEMIC + rng.uniform(-200, 200, n)
    flux, error = make_spectra(galaxies, n, velocity=true_v, sigma=np.full(n, 80.0), seed=3)
    level = np.median(flux, axis=1, keepdims=True)
    for rest in EMISSION_LINES_AA.values():
        centre = rest * np.exp((true_v[:, None] + 150.0) / C_KMS)  # gas offset by 150 km/s
        flux += 3.0 * level * np.exp(-0.5 * ((OBS_WAVE[None] - centre) / 2.0) ** 2)
    t_wave, t_flux = old_template(template_model)
    v, _ = measure_velocities(OBS_WAVE, flux, error, t_wave, t_flux, SYSTEMIC, v_range_kms=400.0)
    assert np.sqrt(np.mean((v - true_v) ** 2)) < 10.0
    mask = emission_line_mask(OBS_WAVE, SYSTEMIC, 600.0)
    halpha = 6562.80 * np.exp(SYSTEMIC / C_KMS)
    assert mask[np.argmin(np.abs(OBS_WAVE - halpha))] and not mask[np.argmin(np.abs(OBS_WAVE - 5500.0))]


def test_masked_nan_and_out_of_range_spectra_give_nan(forward):
    galaxies, template_model = forward
    velocities = np.array([SYSTEMIC, SYSTEMIC, SYSTEMIC, SYSTEMIC + 1100.0, SYSTEMIC - 1100.0, SYSTEMIC + 100.0])
    flux, error = make_spectra(
        galaxies, velocities.size, velocity=velocities, sigma=np.full(velocities.size, 80.0), seed=4
    )
    mask = np.zeros(flux.shape, dtype=int)
    mask[0] = 1  # all masked
    flux[1] = np.nan  # all NaN
    error[2] = 0.0  # no usable error
    flux[5, :800] = np.nan  # half the spectrum missing: still measured
    mask[5, 1200:1300] = 1
    t_wave, t_flux = old_template(template_model)
    v, e = measure_velocities(OBS_WAVE, flux, error, t_wave, t_flux, SYSTEMIC, v_range_kms=600.0, mask=mask)
    assert np.all(np.isnan(v[:5])) and np.all(np.isnan(e[:5]))
    assert abs(v[5] - velocities[5]) < 20.0 and np.isfinite(e[5])
    # a wider range finds them
    v_wide, _ = measure_velocities(OBS_WAVE, flux[3:5], error[3:5], t_wave, t_flux, SYSTEMIC, v_range_kms=1400.0)
    np.testing.assert_allclose(v_wide, velocities[3:5], atol=20.0)


def test_no_absorption_signal_gives_nan(forward):
    _, template_model = forward
    t_wave, t_flux = old_template(template_model)
    rng = np.random.default_rng(5)
    flux = 1.0 + 0.05 * rng.standard_normal((20, OBS_WAVE.size))  # featureless continuum + noise
    v, e = measure_velocities(OBS_WAVE, flux, np.full_like(flux, 0.05), t_wave, t_flux, SYSTEMIC, v_range_kms=300.0)
    # pure noise: NaN (minimum at the range edge or negative amplitude) or a large error bar,
    # never a precise-looking velocity
    found = np.isfinite(v)
    assert np.isnan(v).any() and np.all(e[found] > 15.0), (v, e)


def test_bad_inputs(forward):
    _, template_model = forward
    t_wave, t_flux = old_template(template_model)
    flux = np.ones((2, OBS_WAVE.size))
    with pytest.raises(ValueError, match="linear"):
        measure_velocities(OBS_WAVE**1.01, flux, flux, t_wave, t_flux, SYSTEMIC)
    with pytest.raises(ValueError, match=r"must be \(n, 1761\)"):
        measure_velocities(OBS_WAVE, flux[:, :10], flux[:, :10], t_wave, t_flux, SYSTEMIC)
    with pytest.raises(ValueError, match="does not cover"):
        measure_velocities(OBS_WAVE, flux, flux, np.linspace(8000, 9000, 500), np.ones(500), SYSTEMIC)
