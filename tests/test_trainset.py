"""The training-set store: determinism, completeness, the split, labels and bad settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import zarr

from sfh_pipeline import trainset as ts
from sfh_pipeline.filters import PHANGS_FILTERS
from sfh_pipeline.spectral import MASK_EMISSION, MASK_LASER_GAP
from sfh_pipeline.ssp import write_store
from sfh_pipeline.synth.nebular import nebular_continuum

from .support.ssp_fixtures import analytic_library


@pytest.fixture(scope="module")
def ssp_store(tmp_path_factory):
    return write_store(analytic_library(), tmp_path_factory.mktemp("ssp") / "analytic.zarr")


def small_config(**overrides):
    return ts.resolve_config({"n_spectra": 60, "chunk_size": 30, **overrides})


def build(tmp_path, ssp_store, name="set", **overrides):
    config = small_config(**overrides)
    store = tmp_path / f"{name}.zarr"
    ts.init_store(store, config, ssp_store, PHANGS_FILTERS)
    markers = [
        ts.write_chunk(store, i, ssp_store, tmp_path / name / f"{i:05d}.json") and tmp_path / name / f"{i:05d}.json"
        for i in range(config["n_spectra"] // config["chunk_size"])
    ]
    return store, markers


def read_chunk(store, i, size=30):
    group = zarr.open_group(store, mode="r")
    return {name: np.asarray(group[name][i * size : (i + 1) * size]) for name in ts.CHUNK_ARRAYS}


def test_chunks_are_bit_identical_when_regenerated_and_differ_between_chunks(tmp_path, ssp_store):
    a, _ = build(tmp_path, ssp_store, "a")
    config = small_config()
    b = tmp_path / "b.zarr"
    ts.init_store(b, config, ssp_store, PHANGS_FILTERS)
    ts.write_chunk(b, 1, ssp_store, tmp_path / "b1.json")  # chunk 1 alone, without chunk 0
    first, again = read_chunk(a, 1), read_chunk(b, 1)
    for name in ts.CHUNK_ARRAYS:
        assert first[name].tobytes() == again[name].tobytes(), name
    other = read_chunk(a, 0)
    assert not np.array_equal(other["flux"], first["flux"])
    assert not np.array_equal(other["sfh"], first["sfh"])


def test_complete_set_finalizes_with_a_split_that_survives_growth(tmp_path, ssp_store):
    store, markers = build(tmp_path, ssp_store)
    assert ts.check_complete(store, markers) == []
    summary = ts.finalize(store, markers, tmp_path / "report.json")
    assert sum(summary["split_counts"].values()) == 60
    split_before = np.asarray(zarr.open_group(store)["split"][:])
    flux_before = read_chunk(store, 1)["flux"]

    grown = small_config(n_spectra=120)
    ts.init_store(store, grown, ssp_store, PHANGS_FILTERS)  # resized, not rebuilt
    group = zarr.open_group(store, mode="r")
    assert group["flux"].shape[0] == 120
    np.testing.assert_array_equal(read_chunk(store, 1)["flux"], flux_before)
    assert ts.check_complete(store, markers)[0].startswith("chunk 2: no marker")
    markers += [tmp_path / f"new{i}.json" for i in (2, 3)]
    for i in (2, 3):
        ts.write_chunk(store, i, ssp_store, tmp_path / f"new{i}.json")
    ts.finalize(store, markers, tmp_path / "report.json")
    np.testing.assert_array_equal(np.asarray(zarr.open_group(store)["split"][:60]), split_before)


def test_split_assignment_is_stable_and_has_the_right_fractions():
    split = ts.split_assignment(7, np.arange(200_000), {"validation": 0.1, "test": 0.15})
    counts = np.bincount(split, minlength=3) / split.size
    np.testing.assert_allclose(counts, [0.75, 0.10, 0.15], atol=0.005)
    np.testing.assert_array_equal(
        ts.split_assignment(7, np.arange(1000, 2000), {"validation": 0.1, "test": 0.15}), split[1000:2000]
    )


def test_interrupted_or_stale_chunks_fail_the_check(tmp_path, ssp_store):
    store, markers = build(tmp_path, ssp_store)
    group = zarr.open_group(store, mode="r+")
    # a job that died after writing some arrays of chunk 0, before its marker
    markers[0].unlink()
    problems = ts.check_complete(store, markers)
    assert problems == ["chunk 0: no marker (job never finished)"]
    with pytest.raises(ValueError, match="incomplete"):
        ts.finalize(store, markers, tmp_path / "report.json")
    # a marker whose chunk was partly overwritten by an interrupted rerun
    ts.write_chunk(store, 0, ssp_store, markers[0])
    group["flux"][0:5] = np.zeros((5, group["flux"].shape[1]), dtype=np.float32)
    assert ts.check_complete(store, markers) == ["chunk 0: data differ from its marker (interrupted or overwritten)"]
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_killed_chunk_job_leaves_no_passing_chunk_and_a_rerun_completes(tmp_path, ssp_store):
    config = ts.resolve_config({"n_spectra": 3000, "chunk_size": 3000})
    store = tmp_path / "big.zarr"
    ts.init_store(store, config, ssp_store, PHANGS_FILTERS)
    marker = tmp_path / "chunks" / "00000.json"
    cmd = [
        sys.executable,
        "-m",
        "sfh_pipeline",
        "trainset",
        "chunk",
        "--store",
        str(store),
        "--index",
        "0",
        "--ssp",
        str(ssp_store),
        "--marker",
        str(marker),
    ]
    job = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    flux_chunk = store / "flux" / "c" / "0" / "0"
    deadline = time.time() + 300
    while not flux_chunk.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(job.pid, signal.SIGKILL)
    job.communicate()  # waits, and closes the stderr pipe
    assert flux_chunk.exists(), "the job was killed before it wrote anything: nothing was tested"
    assert not marker.exists()
    assert ts.check_complete(store, [])[0] == "chunk 0: no marker (job never finished)"
    subprocess.run(cmd, check=True, capture_output=True)
    assert ts.check_complete(store, [marker]) == []


def test_labels_and_noise(tmp_path, ssp_store):
    store, _ = build(tmp_path, ssp_store, n_spectra=400, chunk_size=400)
    g = zarr.open_group(store, mode="r")
    sfh = np.asarray(g["sfh"][:])
    np.testing.assert_allclose(sfh.sum(1), 1.0, rtol=1e-5)
    assert np.all(sfh >= 0)
    flux, error, mask = (np.asarray(g[name][:]) for name in ("flux", "error", "mask"))
    snr = np.asarray(g["snr"][:])
    measured = np.median(flux / error, axis=1)
    np.testing.assert_allclose(measured, snr, rtol=0.15)
    wave = np.asarray(g["wavelength_aa"][:])
    halpha = np.argmin(np.abs(wave - 6562.8))
    assert np.all(mask[:, halpha] & MASK_EMISSION)
    gap = np.any(mask & MASK_LASER_GAP, axis=1).mean()
    assert 0.2 < gap < 0.4
    window = (wave >= 5400) & (wave <= 5600)
    np.testing.assert_allclose(np.mean(np.where(mask[:, window] == 0, flux[:, window], np.nan), axis=1), 1.0, rtol=1e-4)
    phot, phot_error = np.asarray(g["phot"][:]), np.asarray(g["phot_error"][:])
    assert phot.shape == (400, 8) and np.all(phot_error > 0)
    rel = phot_error / np.abs(phot)
    assert 0.015 < np.median(rel) < 0.11
    assert list(g.attrs["filters"]) == list(PHANGS_FILTERS)


def test_stored_labels_follow_their_priors(tmp_path, ssp_store):
    """Each scalar label is drawn from its configured prior: a label stored from the wrong
    draw, in the wrong units or over the wrong range fails its KS test."""
    store, _ = build(tmp_path, ssp_store, n_spectra=400, chunk_size=400)
    g = zarr.open_group(store, mode="r")
    config = g.attrs["config"]
    priors = {
        "av": scipy.stats.uniform(0.0, config["dust"]["av_max"]),
        "birth_cloud_extra": scipy.stats.uniform(0.0, config["dust"]["birth_cloud_extra_max"]),
        "sigma_kms": scipy.stats.uniform(config["sigma_kms"][0], np.ptp(config["sigma_kms"])),
        "velocity_kms": scipy.stats.uniform(-config["velocity_offset_kms"], 2 * config["velocity_offset_kms"]),
        "log_mass_formed": scipy.stats.uniform(config["log_mass_formed"][0], np.ptp(config["log_mass_formed"])),
    }
    for name, prior in priors.items():
        assert scipy.stats.kstest(np.asarray(g[name][:], float), prior.cdf).pvalue > 1e-3, name
    # S/N is log-uniform, and the stored value is the one the noise was made with (see test_labels_and_noise)
    log_snr = np.log(np.asarray(g["snr"][:], float))
    lo, hi = np.log(config["snr"])
    assert scipy.stats.kstest(log_snr, scipy.stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_population_averages():
    bin_age = np.array([1e7, 1e8, 1e9, 1e10])
    old = np.array([[0.0, 0.0, 0.0, 1.0]])
    light = np.array([[1.0, 1.0, 1.0, 1.0]])
    logz = np.array([[0.1, 0.0, -0.2, -0.5]])
    pure = ts.population_averages(bin_age, old, logz, light * old)
    assert pure["lw_age"][0] == pytest.approx(10.0) and pure["mw_age"][0] == pytest.approx(10.0)
    assert pure["mw_logz"][0] == pytest.approx(-0.5)
    # young stars outshine old ones per unit mass: light-weighted age is younger
    mixed = ts.population_averages(bin_age, np.array([[0.05, 0, 0, 0.95]]), logz, np.array([[0.05 * 50, 0, 0, 0.95]]))
    assert mixed["lw_age"][0] < mixed["mw_age"][0]
    assert mixed["lw_logz"][0] > mixed["mw_logz"][0]


def test_bad_settings_are_named(tmp_path, ssp_store):
    with pytest.raises(ValueError, match="unknown key trainset.n_spectrum"):
        ts.resolve_config({"n_spectrum": 10})
    with pytest.raises(ValueError, match="multiple of trainset.chunk_size"):
        ts.resolve_config({"n_spectra": 100, "chunk_size": 30})
    with pytest.raises(ValueError, match="age_bin_edges_yr"):
        ts.init_store(tmp_path / "x.zarr", small_config(age_bin_edges_yr=[0, 1e9, 2e10]), ssp_store, PHANGS_FILTERS)
    with pytest.raises(ValueError, match="trainset.wavelength"):
        ts.init_store(
            tmp_path / "x.zarr",
            small_config(wavelength={"start_aa": 4800, "stop_aa": 9990, "step_aa": 1.25}),
            ssp_store,
            PHANGS_FILTERS,
        )
    with pytest.raises(ValueError, match="unknown filter key 'acs-wfc_f999w'"):
        ts.init_store(tmp_path / "x.zarr", small_config(), ssp_store, ["acs-wfc_f999w"])
    empty = tmp_path / "empty.zarr"
    zarr.open_group(empty, mode="w")
    with pytest.raises(ValueError, match="lacks array"):
        ts.init_store(tmp_path / "x.zarr", small_config(), empty, PHANGS_FILTERS)
    assert not (tmp_path / "x.zarr").exists()


def test_report_json_is_written(tmp_path, ssp_store):
    store, markers = build(tmp_path, ssp_store)
    ts.finalize(store, markers, tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_chunks"] == 2 and report["ssp"]["name"] == "analytic"
    assert Path(report["store"]) == store


# ----------------------------------------------------------------------------- realism terms


def test_nebular_emission_has_the_drawn_fluxes_and_ratios():
    wave = np.arange(4800.0, 7000.0, 0.25)  # fine, so that line integrals are sums
    continuum = np.full((400, wave.size), 2.0)
    present = np.arange(400) % 2 == 0
    settings = ts.resolve_config(None)["realism"]
    emission = ts.nebular_emission(wave, continuum, np.random.default_rng(1), present, settings, np.zeros(400))
    assert np.all(emission[~present] == 0) and np.all(emission[present].max(1) > 0)

    def line_flux(centre, half=15.0):
        window = np.abs(wave - centre) < half
        return emission[present][:, window].sum(1) * 0.25

    ew = line_flux(6562.8, 8.0) / 2.0  # H alpha alone (the [N II] lines are 14-20 A away)
    lo, hi = settings["halpha_ew_aa"]
    narrow = ew > 0  # gas broader than ~250 km/s leaks out of the 8 A window
    assert np.all(ew[narrow] <= hi * 1.01) and np.median(np.log(ew)) == pytest.approx(np.log(np.sqrt(lo * hi)), abs=0.5)
    ratio = line_flux(5006.84, 10.0) / line_flux(4958.91, 10.0)
    assert np.median(ratio) == pytest.approx(2.98, rel=0.05)  # [O III] at its atomic ratio
    assert emission.sum(1)[present].min() > 0 and np.all(np.isfinite(emission))


def test_continuum_distortion_has_the_asked_rms_and_is_smooth():
    wave = np.arange(4800.0, 7000.0, 1.25)
    factors = ts.continuum_distortion(wave, np.random.default_rng(2), 2000, rms=0.05, degree=4)
    rms = np.sqrt(np.mean((factors - 1) ** 2))
    assert rms == pytest.approx(0.05, rel=0.1)
    assert np.abs(np.mean(factors - 1)) < 0.005  # no net change of the normalisation on average
    assert np.max(np.abs(np.diff(factors, axis=1))) < 0.01  # smooth: no pixel-to-pixel features


def test_sky_residuals_are_spikes_of_a_few_sigma():
    error = np.full((3000, 1761), 0.1)
    spikes = ts.sky_residuals(error, np.random.default_rng(3), 2.0, np.arange(4800.0, 7001.0, 1.25))
    peaks = (np.abs(spikes) > 0.25).any(1)
    assert np.mean(peaks) == pytest.approx(1 - np.exp(-2.0), abs=0.03)  # Poisson: P(at least one)
    assert np.abs(spikes).max() <= 30 * 0.1 * 1.3


def test_realism_off_keeps_the_spectra_and_on_keeps_the_labels(ssp_store):
    config = ts.resolve_config({"n_spectra": 40, "chunk_size": 40, "seed": 3})
    model = ts.build_model(config, ssp_store, PHANGS_FILTERS)
    plain = ts.generate_chunk(config, model, 0)
    real = ts.resolve_config(
        {
            "n_spectra": 40,
            "chunk_size": 40,
            "seed": 3,
            "realism": {"emission_fraction": 1.0, "continuum_distortion_rms": 0.05},
        }
    )
    realistic = ts.generate_chunk(real, model, 0)
    for name in ("sfh", "logzsol", "lw_age", "mw_logz", "snr", "velocity_kms"):
        np.testing.assert_array_equal(plain[name], realistic[name])
    near_halpha = (model.wavelength_aa > 6555) & (model.wavelength_aa < 6570)
    assert np.median(realistic["flux"][:, near_halpha] - plain["flux"][:, near_halpha]) > 0
    assert not np.array_equal(plain["flux"], realistic["flux"])


def test_nebular_continuum_follows_the_young_light_and_reaches_the_uv_bands(ssp_store):
    """realism.young_hbeta_ew_aa: the labels and every spectrum without stars younger than the
    birth-cloud age stay bit for bit; the others get H beta = EW x their young stars' attenuated
    window light, EW inside the bounds, and a continuum that raises F336W (Balmer jump) far more
    than F814W, as the gas's continuum does (its H beta EW against itself alone ~1,400 A)."""
    from sfh_pipeline.synth.nebular import nebular_continuum_per_hbeta

    assert 1000 < 1 / nebular_continuum_per_hbeta(np.array([4861.33]))[0] < 1800
    base = {"n_spectra": 60, "chunk_size": 60, "seed": 5}
    config = ts.resolve_config(base)
    model = ts.build_model(config, ssp_store, PHANGS_FILTERS)
    plain = ts.generate_chunk(config, model, 0)
    on = ts.generate_chunk(ts.resolve_config({**base, "realism": {"young_hbeta_ew_aa": [50.0, 300.0]}}), model, 0)
    for name in ("sfh", "logzsol", "av", "lw_age", "mw_logz", "snr"):
        np.testing.assert_array_equal(plain[name], on[name])
    out = model.model(on["sfh"], on["logzsol"], on["av"], on["sigma_kms"], on["velocity_kms"], on["birth_cloud_extra"])
    young_light = out.bin_light[:, model.young].sum(1) * 10.0 ** on["log_mass_formed"].astype(float)
    has_young = young_light > 0
    assert 5 <= has_young.sum() < has_young.size, "the prior should give some spectra young stars and some none"
    np.testing.assert_array_equal(plain["flux"][~has_young], on["flux"][~has_young])
    assert np.all(on["nebular_hbeta_flux"][~has_young] < 1e-30)  # 0 up to float32 underflow
    ew = on["nebular_hbeta_flux"][has_young] * on["norm"][has_young] / young_light[has_young]
    assert np.all((ew > 50.0 * 0.999) & (ew < 300.0 * 1.001)), ew
    # the bands' errors are a drawn fraction of their flux: their growth is what the continuum adds
    # (on the stars' noise-free fluxes); unreddened it is far more in F336W, above the Balmer jump,
    # than in F814W
    av_gas = on["av"].astype(float) * (1 + on["birth_cloud_extra"])
    added = model.band_means(
        nebular_continuum(model.photometry_wavelength_aa, on["nebular_hbeta_flux"] * on["norm"], av_gas, model.dust_law)
    )
    stars = out.photometry * 10.0 ** on["log_mass_formed"].astype(float)[:, None]
    growth = on["phot_error"] * on["norm"][:, None] / (plain["phot_error"] * plain["norm"][:, None]) - 1
    np.testing.assert_allclose(growth, added / stars, rtol=1e-3, atol=1e-6)
    f336w, f814w = PHANGS_FILTERS.index("wfc3-uvis_f336w"), PHANGS_FILTERS.index("wfc3-uvis_f814w")
    unreddened = model.band_means(nebular_continuum(model.photometry_wavelength_aa, np.ones(1), np.zeros(1)))[0]
    assert unreddened[f336w] > 3 * unreddened[f814w], unreddened
    with pytest.raises(ValueError, match=r"young_hbeta_ew_aa .*got \[0\.0, 100\.0\]"):
        ts.resolve_config({**base, "realism": {"young_hbeta_ew_aa": [0.0, 100.0]}})


# ----------------------------------------------------------------------------- labels reproduce the flux


def reduced_chi2(flux, model, error, mask):
    """Per spectrum: mean of ((flux - model) / error)^2 over unmasked pixels."""
    pull2 = np.where(mask == 0, ((flux - model) / error) ** 2, 0.0)
    return pull2.sum(1) / (mask == 0).sum(1)


REALISM_ON = {
    "emission_fraction": 0.7,
    "continuum_distortion_rms": 0.03,
    "sky_residuals_per_spectrum": 3,
    "young_hbeta_ew_aa": [100.0, 300.0],
}


@pytest.mark.parametrize("realism", [{}, REALISM_ON], ids=["clean", "realism"])
def test_stored_labels_rebuild_the_stored_flux_to_within_its_noise(tmp_path, ssp_store, realism):
    """Rebuilt from its stored labels alone (forward model x mass / norm, then the realism terms),
    every stored spectrum differs from the stored flux by its noise: reduced chi^2 ~ 1. A label
    that was drawn but not stored, or stored but not the one used, leaves chi^2 >> 1."""
    # S/N 100-300 (the prior's top end and beyond) so that a label a few per cent off shows
    store, markers = build(tmp_path, ssp_store, seed=11, realism=realism, snr=[100.0, 300.0])
    ts.finalize(store, markers, tmp_path / "report.json")
    g = zarr.open_group(store, mode="r")
    labels = {name: np.asarray(g[name][:]) for name in ts.CHUNK_ARRAYS}
    model = ts.build_model(g.attrs["config"], ssp_store, g.attrs["filters"])

    rebuilt = ts.noise_free_flux(model, labels)
    chi2 = reduced_chi2(labels["flux"], rebuilt, labels["error"], labels["mask"])
    assert np.all((chi2 > 0.8) & (chi2 < 1.25)), chi2
    # pooled over ~90,000 independent pixels, chi^2 / N has a standard deviation of 0.005
    assert np.mean(chi2) == pytest.approx(1.0, abs=0.03)
    # the photometry too (8 bands per spectrum: pooled over the set)
    out = model.model(
        labels["sfh"],
        labels["logzsol"],
        labels["av"],
        labels["sigma_kms"],
        labels["velocity_kms"],
        labels["birth_cloud_extra"],
    )
    phot = out.photometry * (10.0 ** labels["log_mass_formed"].astype(float) / labels["norm"])[:, None]
    av_gas = labels["av"].astype(float) * (1 + labels["birth_cloud_extra"])
    phot = phot + model.band_means(
        nebular_continuum(model.photometry_wavelength_aa, labels["nebular_hbeta_flux"], av_gas, model.dust_law)
    )
    assert np.mean(((labels["phot"] - phot) / labels["phot_error"]) ** 2) == pytest.approx(1.0, abs=0.2)

    def chi2_with(**wrong):
        return reduced_chi2(
            labels["flux"], ts.noise_free_flux(model, {**labels, **wrong}), labels["error"], labels["mask"]
        )

    # Birth-cloud dust matters where young stars shine through a lot of dust: the spectrum where
    # dropping it changes the rebuild most must then be rejected.
    no_birth_cloud = chi2_with(birth_cloud_extra=np.zeros_like(labels["birth_cloud_extra"]))
    assert no_birth_cloud.max() > 3.0, "no spectrum of the set is sensitive to birth-cloud dust: nothing was tested"
    # metallicity 0.1 dex low in every bin (the analytic library's metallicity only tilts the
    # continuum, by ~1 % per 0.1 dex)
    logz_off = chi2_with(logzsol=labels["logzsol"] - 0.1)
    assert np.median(logz_off) > 1.3, logz_off
    if realism:
        # a 3 % calibration error is several sigma at S/N > 100
        flat = chi2_with(distortion_legendre=np.zeros_like(labels["distortion_legendre"]))
        assert np.median(flat) > 3.0, flat
        no_sky = chi2_with(sky_spike_height=np.zeros_like(labels["sky_spike_height"]))
        assert no_sky.max() > 1.5
        # line wings leak past the mask, and He I 6678 is not masked at all
        no_lines = chi2_with(emission_line_flux=np.zeros_like(labels["emission_line_flux"]))
        assert no_lines.max() > 3.0
        no_nebular = chi2_with(nebular_hbeta_flux=np.zeros_like(labels["nebular_hbeta_flux"]))
        assert no_nebular.max() > 3.0


def test_store_without_the_rebuild_labels_is_still_read_and_is_rebuilt_when_grown(tmp_path, ssp_store):
    """Stores made before birth_cloud_extra and the realism arrays existed still train; growing one
    starts it afresh (its chunks would lack the new arrays) instead of failing on a missing array."""
    from sfh_pipeline.training import TrainsetReader

    store, markers = build(tmp_path, ssp_store)
    added = (
        "birth_cloud_extra",
        "emission_line_flux",
        "gas_velocity_kms",
        "gas_sigma_kms",
        "distortion_legendre",
        "sky_spike_aa",
        "sky_spike_height",
    )
    for name in added:
        shutil.rmtree(store / name)
    old = zarr.open_group(store, mode="r")
    assert not any(name in old for name in added)
    # as an older version made it: its chunks (and markers) without the new arrays; a lost
    # chunk is regenerated in that layout and the set still finalizes
    for i, marker in enumerate(markers):
        ts.write_chunk(store, i, ssp_store, marker)
    assert ts.check_complete(store, markers) == []
    ts.finalize(store, markers, tmp_path / "report.json")

    arrays = TrainsetReader(store).read_chunk(0, "train")
    assert arrays["flux"].shape[0] == np.count_nonzero(np.asarray(old["split"][:30]) == 0)
    labels = {
        name: np.asarray(old[name][:5])
        for name in ("sfh", "logzsol", "av", "sigma_kms", "velocity_kms", "log_mass_formed", "norm")
    }
    with pytest.raises(KeyError, match="predates them"):
        ts.noise_free_flux(ts.build_model(old.attrs["config"], ssp_store, old.attrs["filters"]), labels)

    ts.init_store(store, small_config(n_spectra=90), ssp_store, PHANGS_FILTERS)
    grown = zarr.open_group(store, mode="r")
    assert all(name in grown for name in added) and grown["flux"].shape[0] == 90


def test_replayed_noise_leaves_the_noise_free_spectrum_and_renoising_draws_a_new_realisation(tmp_path, ssp_store):
    """stored_noise replays a chunk's seeded deviates without the forward model: the stored flux
    minus error x those deviates is the noise-free spectrum rebuilt from the labels. renoised puts
    fresh noise at a fresh S/N on that same spectrum."""
    store, markers = build(tmp_path, ssp_store, seed=5, realism=REALISM_ON)
    g = zarr.open_group(store, mode="r")
    attrs = dict(g.attrs)
    model = ts.build_model(attrs["config"], ssp_store, attrs["filters"])
    chunk = read_chunk(store, 1)
    noise, phot_noise = ts.stored_noise(attrs, 1)
    rebuilt = ts.noise_free_flux(model, chunk)
    # float32 storage: a few 1e-4 of the error, against ~1 for a wrong replay
    assert np.max(np.abs(chunk["flux"] - chunk["error"] * noise - rebuilt) / chunk["error"]) < 1e-3
    # the deviates of another chunk are as far off as any noise
    other, _ = ts.stored_noise(attrs, 0)
    assert np.std(chunk["flux"] - chunk["error"] * other - rebuilt) / np.median(chunk["error"]) > 1.0

    lam = np.asarray(g["wavelength_aa"][:])
    fresh = ts.renoised(chunk, noise, phot_noise, np.random.default_rng(0), attrs["config"], lam)
    lo, hi = attrs["config"]["snr"]
    assert np.all((fresh["snr"] >= lo) & (fresh["snr"] <= hi))
    assert np.corrcoef(np.log(fresh["snr"]), np.log(chunk["snr"]))[0, 1] < 0.5
    # renormalised: the unmasked window averages 1, as the store's spectra do
    window = (lam >= 5400) & (lam <= 5600)
    window_mean = np.nanmean(np.where(chunk["mask"][:, window] == 0, fresh["flux"][:, window], np.nan), axis=1)
    np.testing.assert_allclose(window_mean, 1.0, rtol=1e-5)
    # the new noise sits on the same spectrum (up to the new normalisation), is unit normal in
    # units of the new error and is independent of the stored noise
    scale = np.median(fresh["error"] / chunk["error"] * (fresh["snr"] / chunk["snr"])[:, None], axis=1)
    pull = (fresh["flux"] - rebuilt * scale[:, None]) / fresh["error"]
    assert np.mean(pull) == pytest.approx(0.0, abs=0.02)
    assert np.std(pull) == pytest.approx(1.0, abs=0.02)
    assert abs(np.corrcoef(pull.ravel(), noise.ravel())[0, 1]) < 0.02
    # the error spectrum keeps its shape at the new S/N
    np.testing.assert_allclose(
        fresh["error"] / fresh["error"].mean(1, keepdims=True),
        chunk["error"] / chunk["error"].mean(1, keepdims=True),
        rtol=1e-4,
    )
    phot_pull = (fresh["phot"] - (chunk["phot"] - chunk["phot_error"] * phot_noise) * scale[:, None]) / fresh[
        "phot_error"
    ]
    assert np.std(phot_pull) == pytest.approx(1.0, abs=0.1)
