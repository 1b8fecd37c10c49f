"""The forward-model check: chi^2 near 1 for the true population, worse for a wrong one."""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline import forward_check
from sfh_pipeline.forward import ForwardModel
from sfh_pipeline.forward_check import ForwardCheck
from sfh_pipeline.instrument import linear_grid
from sfh_pipeline.ssp import load_ssp

from .support.ssp_fixtures import EDGES, library_with_aging_lines


def test_true_population_fits_and_wrong_one_does_not(tmp_path, monkeypatch):
    analytic_ssp_store = library_with_aging_lines(tmp_path / "aging.zarr")
    wave = linear_grid(4800.0, 7000.0, 1.25)
    truth_model = ForwardModel(load_ssp(analytic_ssp_store), EDGES, wavelength_aa=wave)
    n_bins = truth_model.n_bins
    young = np.zeros((1, n_bins))
    young[0, :3] = 1 / 3
    old = np.zeros((1, n_bins))
    old[0, -3:] = 1 / 3
    logz = np.zeros((1, n_bins))
    mass = 2.0e4
    clean = (
        truth_model.model(
            old, logz, av=np.array([0.4]), sigma_kms=np.array([80.0]), velocity_kms=np.array([20.0])
        ).flux[0]
        * mass
    )
    rng = np.random.default_rng(0)
    error = np.full_like(clean, np.median(clean) / 50.0)
    noisy = (clean + error * rng.standard_normal(clean.size))[None]
    mask = np.zeros_like(noisy, dtype=np.uint8)
    mask[0, 800:850] = 1

    check = ForwardCheck(analytic_ssp_store, EDGES, wave)
    right = check.fit(noisy, error[None], mask, old, logz)
    wrong = check.fit(noisy, error[None], mask, young, logz)
    # log-rebinning correlates neighbouring pixels, so pure noise gives a reduced chi^2 a little below 1
    assert 0.5 < right["chi2"][0] < 1.3
    assert wrong["chi2"][0] > 3 * right["chi2"][0]
    assert abs(right["av"][0] - 0.4) < 0.05
    assert abs(right["velocity_kms"][0] - 20.0) < 10 and abs(right["sigma_kms"][0] - 80.0) < 15
    np.testing.assert_allclose(right["mass_formed"][0], mass, rtol=0.05)
    # the analytic library keeps 1 - 0.4 age/14 Gyr of the mass formed, linear in age, so three
    # equal old bins (mean age (6.5 + 9.5 + 12.5)/3 = 9.5 Gyr) keep exactly 1 - 0.4 * 9.5/14
    assert right["surviving_fraction"][0] == pytest.approx(1 - 0.4 * 9.5 / 14.0, rel=1e-6)

    nothing = check.fit(noisy, error[None], np.ones_like(mask), old, logz)
    assert np.isnan(nothing["chi2"][0])

    # a tile's bins are modelled in chunks: a seam between chunks changes no fit
    monkeypatch.setattr(forward_check, "MODEL_CHUNK", 2)
    chunked = check.fit(
        np.repeat(noisy, 3, 0),
        np.repeat(error[None], 3, 0),
        np.repeat(mask, 3, 0),
        np.vstack([old, young, old]),
        np.repeat(logz, 3, 0),
    )
    for key, value in chunked.items():
        np.testing.assert_allclose(value, [right[key][0], wrong[key][0], right[key][0]], rtol=1e-9, err_msg=key)


def test_batched_fit_finds_what_ppxf_finds(tmp_path):
    """All spectra fitted at once reach pPXF's answer, one spectrum at a time, on the same model:
    dispersions from below a pixel (~65 km/s here) to 350 km/s, attenuation from 0 to 2 mag,
    S/N 15-80, right and wrong populations."""
    store = library_with_aging_lines(tmp_path / "aging.zarr")
    wave = linear_grid(4800.0, 7000.0, 1.25)
    truth_model = ForwardModel(load_ssp(store), EDGES, wavelength_aa=wave)
    rng = np.random.default_rng(3)
    n = 12
    sfh = rng.dirichlet(np.full(truth_model.n_bins, 0.3), n)
    logz = rng.uniform(-1.0, 0.3, (n, truth_model.n_bins))
    sigma = np.array([20.0, 40, 60, 80, 100, 120, 150, 180, 220, 260, 300, 350])
    av = np.linspace(0.0, 2.0, n)
    velocity = rng.uniform(-150.0, 150.0, n)
    clean = truth_model.model(sfh, logz, av=av, sigma_kms=sigma, velocity_kms=velocity).flux * 3.0e4
    error = np.median(clean, axis=1, keepdims=True) / rng.uniform(15.0, 80.0, (n, 1)) * np.ones_like(clean)
    noisy = clean + error * rng.standard_normal(clean.shape)
    mask = np.zeros_like(noisy, dtype=np.uint8)
    mask[:, 600:640] = 1
    populations = np.vstack([sfh[:6], np.roll(sfh[6:], 1, axis=0)])  # the last six get another's SFH

    check = ForwardCheck(store, EDGES, wave)
    batched = check.fit(noisy, error, mask, populations, logz)
    reference = check.fit(noisy, error, mask, populations, logz, method="ppxf")
    # the same minimum: chi^2 equal to 0.3 % (the batched fit is at least as good within that)
    np.testing.assert_allclose(batched["chi2"], reference["chi2"], rtol=3e-3)
    assert np.all(batched["chi2"] <= reference["chi2"] * (1 + 1e-3))
    np.testing.assert_allclose(batched["av"], reference["av"], atol=0.01)
    np.testing.assert_allclose(batched["mass_formed"], reference["mass_formed"], rtol=5e-3)
    np.testing.assert_allclose(batched["sigma_kms"], reference["sigma_kms"], rtol=0.02)
    np.testing.assert_allclose(batched["velocity_kms"], reference["velocity_kms"], atol=3.0)
    np.testing.assert_allclose(batched["av"][:6], av[:6], atol=0.1)  # the right populations find the truth
