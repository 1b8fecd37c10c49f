"""Where the network goes wrong on young and mixed populations: synthetic young-plus-old mixtures
made with the training set's own forward model, at the conditions of real SDSS / MaNGA spectra
(S/N 30-60 per pixel, sigma 50-150 km/s, no HST bands), and the network's error (predicted - true
LW / MW log age and log Z) per young light fraction, for a baseline and for each candidate cause
toggled on its own:

* ``baseline``: an old host (all its mass in the 8-11 Gyr bin, solar) plus a young component (a
  burst in one bin of 7.5-300 Myr, or constant SF over the last 10-200 Myr, solar) at a given
  share of the light in the normalisation window (5400-5600 A, attenuated, as the training's
  light weights); one Calzetti screen for both (A_V 0-1), MUSE LSF, the training's noise model.
* (a) ``prior_coverage``: how often the training labels hold young light on old (mass-weighted)
  hosts, per young-light-fraction cell, and the network's error on the test split in those cells.
* (b) ``balmer_lines``: star-forming nebular lines (H alpha EW 10-100 A, H beta from the Balmer
  decrement of the gas dust, [N II], [S II], [O III], [O I], He I, [N I]) added before the
  noise; the predictor masks them (400 km/s) as in training.
* (c) ``nebular_continuum``: the H II gas's continuum (H free-free + free-bound, He, two-photon,
  T = 10^4 K, Case B) scaled to the H beta flux of (b)'s lines; ``nebular_continuum_strong``: the
  same shape at 10-30 % of the continuum at 5000 A.
* (d) ``young_dust``: two-component dust, A_V,young = A_V + 1 mag on the whole young component.
* (e) ``metal_poor_young``: the young component at Z = 0.2 Z_sun on the solar host.
* (f) ``lsf_*``: the spectra made at the LSF of SDSS (2.76 A FWHM), MaNGA (R = 2000) or 3.5 A
  FWHM instead of MUSE's, read by the network as they are (as ``predict`` does with SDSS files).
* ``combined``: (b) + (c) + (d) + (e) + MaNGA LSF together.

Every case uses the same draws (seeded), so its change against the baseline is measured spectrum
by spectrum (``shift``: median of the paired difference of errors). Prints JSON; ``--save NAME``
also keeps it in bench/results/NAME.json.

``--bands F438W,F555W,...`` reads every case a second time with those HST bands given as well
(``with_bands``: the same spectra, the bands' photon-weighted mean f_lambda of the same mixture
with the training's 2-10 % errors and noise; the nebular continuum and lines of the case in them
too), so what the bands change is measured spectrum by spectrum (``band_shift``). PHANGS maps
have all five UVIS bands; an SDSS / MaNGA spectrum covers F438W and F555W (and F814W at MaNGA's
reach).

    nice -n 5 python bench/young_regime.py [--n-per-cell 250] [--bands F275W,F336W,F438W,F555W,F814W]
        [--save young_regime]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

import numpy as np
import zarr
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline import load_predictor
from sfh_pipeline.filters import PhotometryOperator, load_throughputs
from sfh_pipeline.forward import ForwardModel
from sfh_pipeline.spectral import MASK_EMISSION, emission_line_mask
from sfh_pipeline.synth.nebular import nebular_continuum
from sfh_pipeline.trainset import (
    NEBULAR_LINES_AA,
    build_model,
    emission_spectrum,
    muse_noise_shape,
    population_averages,
)

KEYS = ("lw_age", "mw_age", "lw_logz", "mw_logz")
#: Young light fractions (window 5400-5600 A) of the cells.
FRACTIONS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0)
#: Host: the 8-11 Gyr bin (midpoint 9.5 Gyr), solar.
HOST_BIN_YR = (8e9, 1.1e10)
#: Young bursts: the bins with midpoints 7.5-300 Myr; constant SF: the last T yr.
BURST_MIDPOINTS_YR = (7.5e6, 3e8)
CONSTANT_SF_SPANS_YR = (1e7, 2e7, 4e7, 1e8, 2e8)
#: "Young" in the training labels: bins ending at or before 400 Myr.
YOUNG_EDGE_YR = 4e8
#: Old host in the training labels: mass-weighted log age at least this.
OLD_MW_LOG_AGE = 9.6
CCM_K_HBETA, CCM_K_HALPHA, CCM_RV = 3.61, 2.53, 3.1
#: A_V of the gas per A_V of the stars (Calzetti 2000).
GAS_AV_PER_STELLAR_AV = 1 / 0.44


@dataclass
class Draws:
    """Per-spectrum draws shared by every case (common random numbers)."""

    fraction: np.ndarray  # target young light fraction
    young_x: np.ndarray  # (n, n_bins) young component's mass fractions (sum 1)
    young_kind: np.ndarray  # "burst" / "constant"
    av: np.ndarray
    sigma: np.ndarray
    velocity: np.ndarray
    snr: np.ndarray
    slope: np.ndarray
    noise: np.ndarray  # (n, n_wave) unit normal
    halpha_ew: np.ndarray
    line_ratios: dict
    gas_velocity: np.ndarray
    gas_sigma: np.ndarray
    nebular_share_5000: np.ndarray  # for the strong nebular continuum


def young_components(edges_yr: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mass fractions (n, n_bins) of young components: half bursts in one bin (midpoint 7.5-300
    Myr, uniform over those bins), half constant SF over the last T (``CONSTANT_SF_SPANS_YR``)."""
    mid = 0.5 * (edges_yr[1:] + edges_yr[:-1])
    burst_bins = np.flatnonzero((mid >= BURST_MIDPOINTS_YR[0] * 0.999) & (mid <= BURST_MIDPOINTS_YR[1] * 1.001))
    widths = np.diff(edges_yr)
    x = np.zeros((n, edges_yr.size - 1))
    burst = rng.random(n) < 0.5
    which = rng.integers(0, burst_bins.size, n)
    span = np.asarray(CONSTANT_SF_SPANS_YR)[rng.integers(0, len(CONSTANT_SF_SPANS_YR), n)]
    for i in range(n):
        if burst[i]:
            x[i, burst_bins[which[i]]] = 1.0
        else:
            inside = edges_yr[1:] <= span[i] * (1 + 1e-9)
            x[i, inside] = widths[inside]
    return x / x.sum(1, keepdims=True), np.where(burst, "burst", "constant")


def host_component(edges_yr: np.ndarray, n: int) -> np.ndarray:
    """Mass fractions (n, n_bins) of the old host: all in the bin ``HOST_BIN_YR``."""
    k = int(np.argmin(np.abs(edges_yr[:-1] - HOST_BIN_YR[0]) + np.abs(edges_yr[1:] - HOST_BIN_YR[1])))
    x = np.zeros((n, edges_yr.size - 1))
    x[:, k] = 1.0
    return x


def draw(model: ForwardModel, n_per_cell: int, seed: int) -> Draws:
    rng = np.random.default_rng(seed)
    fraction = np.repeat(np.asarray(FRACTIONS), n_per_cell)
    n = fraction.size
    young_x, kind = young_components(model.edges_yr, rng, n)

    def log_uniform(lo, hi, size=n):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), size))

    ratios = {  # star-forming H II regions (BPT star-forming branch, low density)
        "nii_halpha": log_uniform(0.2, 0.5),
        "sii_halpha": log_uniform(0.15, 0.4),
        "sii_6716_6731": rng.uniform(1.2, 1.4, n),
        "oiii_hbeta": log_uniform(0.3, 3.0),
        "oi_halpha": log_uniform(0.01, 0.05),
        "nI_hbeta": log_uniform(0.005, 0.03),
    }
    velocity = rng.uniform(-50.0, 50.0, n)
    return Draws(
        fraction=fraction,
        young_x=young_x,
        young_kind=kind,
        av=rng.uniform(0.0, 1.0, n),
        sigma=rng.uniform(50.0, 150.0, n),
        velocity=velocity,
        snr=log_uniform(30.0, 60.0),
        slope=rng.uniform(-2.0, -1.0, n),
        noise=rng.standard_normal((n, model.wavelength_aa.size)),
        halpha_ew=log_uniform(10.0, 100.0),
        line_ratios=ratios,
        gas_velocity=velocity + rng.normal(0.0, 30.0, n),
        gas_sigma=rng.uniform(20.0, 80.0, n),
        nebular_share_5000=rng.uniform(0.1, 0.3, n),
    )


def mixture(
    model: ForwardModel,
    young_x: np.ndarray,
    host_x: np.ndarray,
    fraction: np.ndarray,
    av: np.ndarray,
    sigma: np.ndarray,
    velocity: np.ndarray,
    young_logz: float | np.ndarray = 0.0,
    host_logz: float | np.ndarray = 0.0,
    young_extra_av: float | np.ndarray = 0.0,
) -> dict[str, np.ndarray]:
    """Noise-free young + old spectra with the young component at ``fraction`` of the attenuated
    light in the model's normalisation window (the light weights of the training labels).

    Each component is modelled per unit mass (young one with A_V + ``young_extra_av``); the
    young mass share is m = f L_old / (f L_old + (1 - f) L_young), L the window light per unit
    mass. Returns ``flux``, ``photometry`` (the model's filters, photon-weighted mean f_lambda),
    ``young_flux`` (its part of ``flux``), ``mass_fractions``, ``logz`` (per bin), ``bin_light``,
    ``young_mass`` and the true ``lw_age``, ``mw_age``, ``lw_logz``, ``mw_logz`` as the training
    set computes them.
    """
    n = young_x.shape[0]
    ones = np.ones(n)
    y_logz = np.broadcast_to(np.asarray(young_logz, float), (n,))[:, None] * np.ones(model.n_bins)
    h_logz = np.broadcast_to(np.asarray(host_logz, float), (n,))[:, None] * np.ones(model.n_bins)
    av_young = av + np.broadcast_to(np.asarray(young_extra_av, float), (n,))
    young = model.model(young_x, y_logz, av_young, sigma, velocity)
    host = model.model(host_x, h_logz, av * ones, sigma, velocity)
    light_y, light_h = young.bin_light.sum(1), host.bin_light.sum(1)
    f = np.asarray(fraction, float)
    m = f * light_h / (f * light_h + (1 - f) * light_y)
    mass = m[:, None] * young_x + (1 - m)[:, None] * host_x
    logz = np.where(young_x > 0, y_logz, h_logz)
    bin_light = m[:, None] * young.bin_light + (1 - m)[:, None] * host.bin_light
    out = {
        "flux": m[:, None] * young.flux + (1 - m)[:, None] * host.flux,
        "photometry": m[:, None] * young.photometry + (1 - m)[:, None] * host.photometry,
        "young_flux": m[:, None] * young.flux,
        "mass_fractions": mass,
        "logz": logz,
        "bin_light": bin_light,
        "young_mass": m,
    }
    out.update(population_averages(model.bin_age_yr, mass, logz, bin_light))
    return out


def star_forming_lines(lam: np.ndarray, stellar: np.ndarray, d: Draws) -> tuple[np.ndarray, np.ndarray]:
    """Line fluxes (n, n_lines, order of NEBULAR_LINES_AA, units of ``stellar`` x A) and the
    observed H beta flux. H alpha from its EW against the stellar continuum at 6540-6590 A (as
    the training does); H beta from the Balmer decrement 2.86 reddened by the gas, A_V,gas =
    A_V / 0.44 (Calzetti 2000) with the CCM k's."""
    window = (lam >= 6540) & (lam <= 6590)
    halpha = d.halpha_ew * stellar[:, window].mean(1)
    decrement = 2.86 * 10 ** (0.4 * (d.av * GAS_AV_PER_STELLAR_AV) * (CCM_K_HBETA - CCM_K_HALPHA) / CCM_RV)
    hbeta = halpha / decrement
    r = d.line_ratios
    oiii = r["oiii_hbeta"] * hbeta
    nii = r["nii_halpha"] * halpha
    sii = r["sii_halpha"] * halpha
    s6716 = sii * r["sii_6716_6731"] / (1 + r["sii_6716_6731"])
    oi = r["oi_halpha"] * halpha
    values = {
        "Hbeta": hbeta,
        "[OIII]4959": oiii / 2.98,
        "[OIII]5007": oiii,
        "[NI]5198": 0.6 * r["nI_hbeta"] * hbeta,
        "[NI]5200": 0.4 * r["nI_hbeta"] * hbeta,
        "HeI5876": 0.035 * halpha,
        "[OI]6300": oi,
        "[OI]6364": oi / 3.05,
        "[NII]6548": nii / 3.05,
        "Halpha": halpha,
        "[NII]6583": nii,
        "[SII]6716": s6716,
        "[SII]6731": sii - s6716,
        "HeI6678": 0.011 * halpha,
    }
    return np.stack([values[name] for name in NEBULAR_LINES_AA], axis=1), hbeta


def observe(
    lam: np.ndarray, flux: np.ndarray, extra: np.ndarray, d: Draws, config: dict, noise_on_total: bool = False
) -> dict[str, np.ndarray]:
    """The training's noise and normalisation: error = median(stellar flux) / S/N x the MUSE
    error shape, emission-line mask bits, norm = mean unmasked noisy flux in the window.
    ``extra`` (lines, nebular continuum) is added before the noise; with ``noise_on_total`` the
    S/N refers to stars + ``extra`` (a continuum that raises the signal)."""
    signal = flux + extra if noise_on_total else flux
    error = np.median(signal, axis=1, keepdims=True) / d.snr[:, None] * muse_noise_shape(lam, d.slope)
    noisy = flux + extra + error * d.noise
    mask = np.where(emission_line_mask(lam, config["emission_mask_halfwidth_kms"]), MASK_EMISSION, 0)
    mask = np.broadcast_to(mask.astype(np.uint8), noisy.shape).copy()
    window = (lam >= config["norm_window_aa"][0]) & (lam <= config["norm_window_aa"][1])
    norm = np.nanmean(np.where(mask[:, window] == 0, noisy[:, window], np.nan), axis=1)
    return {"flux": noisy / norm[:, None], "error": error / norm[:, None], "mask": mask, "norm": norm}


#: A wide grid (A) for the extra light's band fluxes: it holds every HST band's curve.
BAND_GRID_AA = np.arange(1900.0, 10500.0, 1.0)


def band_fluxes(
    stellar_phot: np.ndarray,
    line_flux: np.ndarray,
    gas_velocity: np.ndarray,
    gas_sigma: np.ndarray,
    av: np.ndarray,
    d_noise: tuple[np.ndarray, np.ndarray],
    operator: PhotometryOperator,
    law: str,
    lines: bool,
    continuum: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Observed band fluxes (n, n_bands) and their errors, photon-weighted mean f_lambda in the
    units of the spectra: the mixture's stars, plus (when the case adds them) its nebular lines
    (:data:`NEBULAR_LINES_AA` only: no [O II], H gamma or [S III]) and nebular continuum
    (``continuum``: its H beta flux per spectrum, the continuum's shape over ``BAND_GRID_AA``),
    with the training's errors (``d_noise``: fractional error 2-10 %, unit normal deviates)."""
    phot = np.array(stellar_phot, dtype=float)
    if lines:
        phot += operator.mean_flambda(emission_spectrum(BAND_GRID_AA, line_flux, gas_velocity, gas_sigma))
    if continuum is not None:
        phot += operator.mean_flambda(nebular_continuum(BAND_GRID_AA, continuum, av * GAS_AV_PER_STELLAR_AV, law))
    frac, deviate = d_noise
    error = phot * frac
    return phot + error * deviate, error


def robust(delta: np.ndarray) -> tuple[float, float]:
    median = float(np.median(delta))
    return median, float(1.4826 * np.median(np.abs(delta - median)))


def cell_table(pred: dict, truth: dict, fraction: np.ndarray, base_error: dict | None) -> list[dict]:
    rows = []
    for f in FRACTIONS:
        sel = np.isclose(fraction, f)
        row: dict[str, object] = {"young_light_fraction": f, "n": int(sel.sum())}
        for key in KEYS:
            err = pred[key][sel] - truth[key][sel]
            bias, scatter = robust(err)
            entry = {"bias": round(bias, 3), "scatter": round(scatter, 3)}
            if base_error is not None:
                entry["shift"] = round(float(np.median(err - base_error[key][sel])), 3)
            row[key] = entry
        rows.append(row)
    return rows


def training_light(model: ForwardModel, sfh: np.ndarray, logz: np.ndarray, av: np.ndarray, bc: np.ndarray):
    """Attenuated window light per bin (n, n_bins) of training labels, as ForwardModel.model
    computes ``bin_light``, from the light per unit mass of each (bin, library Z) and the
    attenuation of the window, both measured with the model itself (no private attributes)."""
    nb, nz = model.n_bins, model.logzsol.size
    x = np.repeat(np.eye(nb), nz, axis=0)
    z = np.repeat(np.tile(model.logzsol, nb)[:, None], nb, axis=1)
    zero = np.zeros(nb * nz)
    unit = model.model(x, z, zero, zero + 50.0).bin_light.sum(1).reshape(nb, nz)
    one = model.model(x[:1], z[:1], np.ones(1), np.full(1, 50.0)).bin_light.sum() / unit[0, 0]
    ln_t = np.log(one)  # ln transmission of the window per mag of A_V (young factor 1)
    out = np.empty(sfh.shape)
    for start in range(0, sfh.shape[0], 20000):
        sl = slice(start, start + 20000)
        w = model.metallicity_weights(logz[sl])  # (n, nb, nz)
        light = (sfh[sl][..., None] * w * unit[None]).sum(-1)
        factor = np.where(model.young[None, :], (1 + bc[sl])[:, None], 1.0)
        out[sl] = light * np.exp(ln_t * av[sl][:, None] * factor)
    return out


def prior_coverage(path: str, model: ForwardModel, predictor, batch: int) -> dict:
    """(a): young light fraction of the training labels on old hosts, and the network's error on
    the test split per young-light-fraction cell."""
    group = zarr.open_group(path, mode="r")
    labels = {k: np.asarray(group[k][:]) for k in ("sfh", "logzsol", "av", "birth_cloud_extra", "split", *KEYS)}
    light = training_light(
        model, labels["sfh"].astype(float), labels["logzsol"].astype(float), labels["av"], labels["birth_cloud_extra"]
    )
    check = population_averages(model.bin_age_yr, labels["sfh"], labels["logzsol"], light)
    young = model.edges_yr[1:] <= YOUNG_EDGE_YR * (1 + 1e-9)
    frac = light[:, young].sum(1) / light.sum(1)
    old = labels["mw_age"] >= OLD_MW_LOG_AGE
    mid = np.asarray(FRACTIONS)
    edges = np.concatenate([[0.0], 0.5 * (mid[1:] + mid[:-1]), [1.0 + 1e-9]])
    cell = np.clip(np.searchsorted(edges, frac, side="right") - 1, 0, mid.size - 1)

    # what else the old hosts' light holds: intermediate ages (0.4-8 Gyr; the mixtures have none), the share
    # of the young light from bins < 20 Myr, and how much poorer in Z the young bins are than the old ones
    ages = model.bin_age_yr
    middle = light[:, (ages > YOUNG_EDGE_YR) & (ages < 8e9)].sum(1) / light.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        very_young = light[:, model.edges_yr[1:] <= 2e7 * (1 + 1e-9)].sum(1) / light[:, young].sum(1)
        z_young = (light[:, young] * labels["logzsol"][:, young]).sum(1) / light[:, young].sum(1)
        older = ages > 1e9
        z_old = (labels["sfh"][:, older] * labels["logzsol"][:, older]).sum(1) / labels["sfh"][:, older].sum(1)
    z_drop = np.nan_to_num(z_old - z_young, nan=-np.inf)
    test = np.flatnonzero((labels["split"] == 2) & old)
    arrays = {}
    for name in ("flux", "error", "mask"):
        arrays[name] = np.asarray(group[name].get_orthogonal_selection((test, slice(None))))
    pred = predictor.predict_normalised(arrays["flux"], arrays["error"], arrays["mask"], batch_size=batch)
    snr = np.asarray(group["snr"].get_orthogonal_selection((test,)))
    rows = []
    for k, f in enumerate(FRACTIONS):
        in_cell = cell == k
        n_old = int((in_cell & old).sum())
        row: dict[str, object] = {
            "young_light_fraction": f,
            "cell": [round(float(edges[k]), 3), round(float(min(edges[k + 1], 1.0)), 3)],
            "n_train_all": int(in_cell.sum()),
            "n_train_old_host": n_old,
            "share_of_old_hosts": round(n_old / max(int(old.sum()), 1), 5),
        }
        here = in_cell & old
        if here.any():
            row["median_intermediate_light_share"] = round(float(np.median(middle[here])), 3)
            row["share_two_component_like"] = round(float(np.mean(middle[here] < 0.05)), 4)
            row["median_very_young_share_of_young_light"] = round(float(np.nanmedian(very_young[here])), 3)
            row["share_young_z_below_old_by_0.5dex"] = round(float(np.mean(z_drop[here] >= 0.5)), 4)
        sel = (cell[test] == k) & (snr >= 20)
        row["n_test_old_host_snr_ge_20"] = int(sel.sum())
        if sel.sum() >= 10:
            for key in ("lw_age", "lw_logz"):
                bias, scatter = robust(pred[key][sel] - labels[key][test][sel])
                row[f"test_{key}"] = {"bias": round(bias, 3), "scatter": round(scatter, 3)}
        rows.append(row)
    return {
        "definition": (
            f"young = bins ending at <= {YOUNG_EDGE_YR:.0e} yr; young light fraction = their share of the attenuated "
            f"light in the normalisation window, recomputed from the labels (sfh, logzsol, av, birth_cloud_extra); "
            f"old host = MW log age >= {OLD_MW_LOG_AGE}; test-split errors of the reference network on old hosts "
            "with S/N >= 20, spectrum only"
        ),
        "labels_reproduced_max_abs_dex": {
            k: round(float(np.max(np.abs(check[k] - labels[k]))), 4) for k in ("lw_age", "lw_logz")
        },
        "n_train": int(frac.size),
        "n_old_host": int(old.sum()),
        "old_host_share_with_young_light_ge_0.2": round(float(np.mean(frac[old] >= 0.2)), 4),
        "old_host_share_with_young_light_ge_0.5": round(float(np.mean(frac[old] >= 0.5)), 4),
        "cells": rows,
    }


def training_emission(path: str) -> dict:
    """What the training set's nebular-line realism holds: H alpha EW (A, against the mean
    flux at 6520-6540 and 6600-6620 A) and how it relates to the young light."""
    group = zarr.open_group(path, mode="r")
    lines = list(group.attrs["nebular_lines_aa"])
    k = lines.index("Halpha")
    n = min(group["flux"].shape[0], 20000)
    rows = np.arange(n)
    flux = np.asarray(group["flux"][:n])
    lam = np.asarray(group["wavelength_aa"][:])
    side = ((lam >= 6520) & (lam <= 6540)) | ((lam >= 6600) & (lam <= 6620))
    ew = np.asarray(group["emission_line_flux"][:n, k]) / flux[:, side].mean(1)
    lw_age = np.asarray(group["lw_age"][rows])
    has = ew > 0
    return {
        "config": dict(group.attrs["config"]["realism"]),
        "n_sampled": int(n),
        "share_with_lines": round(float(has.mean()), 3),
        "share_with_halpha_ew_ge_10": round(float((ew >= 10).mean()), 3),
        "median_halpha_ew_young_lw_age_lt_8.7": round(float(np.median(ew[lw_age < 8.7])), 2),
        "median_halpha_ew_old_lw_age_ge_9.7": round(float(np.median(ew[lw_age >= 9.7])), 2),
        "note": (
            "in training the lines (ratios of star-forming, LINER and Seyfert gas, gas sigma 20-400 km/s, "
            "offset sd 150 km/s) are drawn independently of the stellar population, and there is no nebular "
            "continuum; the emission-line mask (400 km/s) is the same in training and prediction"
        ),
    }


def summarise(cells: list[dict]) -> dict:
    """Shift of the LW errors against the baseline, averaged over the cells with young light
    0.2-0.8 (where mixtures matter), and the largest |shift| over all cells."""
    mixed = [c for c in cells if 0.2 <= c["young_light_fraction"] <= 0.8]
    out = {}
    for key in KEYS:
        shifts = [c[key]["shift"] for c in cells]
        out[f"{key}_shift_mixed"] = round(float(np.mean([c[key]["shift"] for c in mixed])), 3)
        out[f"{key}_shift_max"] = round(float(shifts[int(np.argmax(np.abs(shifts)))]), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trainset", default="resources/trainsets/full/trainset.zarr")
    parser.add_argument("--ssp", default="resources/ssp/bc03_miles.zarr")
    parser.add_argument("--model", default="models/reference/model.pt")
    parser.add_argument("--n-per-cell", type=int, default=250)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--bands",
        default="",
        help="comma-separated HST bands (F438W or wfc3-uvis_f438w) to read every case with as well",
    )
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    group = zarr.open_group(args.trainset, mode="r")
    config = dict(group.attrs["config"])
    filters = list(group.attrs["filters"])
    bands = [band_key(b, filters) for b in args.bands.split(",") if b.strip()]
    model = build_model(config, args.ssp, filters)
    lam = model.wavelength_aa
    if not np.allclose(lam, np.asarray(group["wavelength_aa"][:])):
        raise ValueError(f"the forward model's grid differs from {args.trainset}'s")
    predictor = load_predictor(args.model, device="cpu")
    d = draw(model, args.n_per_cell, args.seed)
    n = d.fraction.size
    host_x = host_component(model.edges_yr, n)

    def lsf_model(fwhm) -> ForwardModel:
        wave = config["wavelength"]
        from sfh_pipeline.instrument import linear_grid
        from sfh_pipeline.ssp import load_ssp

        return ForwardModel(
            load_ssp(args.ssp),
            age_bin_edges_yr=config["age_bin_edges_yr"],
            wavelength_aa=linear_grid(wave["start_aa"], wave["stop_aa"], wave["step_aa"]),
            lsf_fwhm_aa=fwhm,
            dust_law=config["dust"]["law"],
            birth_cloud_age_yr=config["dust"]["birth_cloud_age_yr"],
            velscale_kms=config["velscale_kms"],
            max_velocity_kms=model_margin(config),
            norm_window_aa=tuple(config["norm_window_aa"]),
            filters=filters,
        )

    lsf = {
        "lsf_sdss_2.76A": lambda w: np.full(np.shape(w), 2.76),
        "lsf_manga_R2000": lambda w: np.asarray(w, float) / 2000.0,
        "lsf_3.5A": lambda w: np.full(np.shape(w), 3.5),
    }
    cases = {
        "baseline": {"description": "old host (8-11 Gyr, solar) + young burst / constant SF (solar), one screen"},
        "balmer_lines": {"description": "(b) star-forming lines, H alpha EW 10-100 A, masked as in training"},
        "nebular_continuum": {"description": "(c) nebular continuum scaled to (b)'s H beta (lines not added)"},
        "nebular_continuum_strong": {"description": "(c) nebular continuum at 10-30 % of the continuum at 5000 A"},
        "young_dust": {"description": "(d) A_V,young = A_V + 1 mag on the whole young component"},
        "metal_poor_young": {"description": "(e) young component at 0.2 Z_sun on the solar host"},
        **{name: {"description": f"(f) spectra made at another LSF: {name[4:]}"} for name in lsf},
        "combined": {"description": "(b) + (c) + (d) + (e) + MaNGA LSF"},
    }
    results: dict[str, dict] = {}
    base_error = None
    present = np.zeros((n, len(filters)), dtype=bool)
    present[:, [filters.index(b) for b in bands]] = True
    band_rng = np.random.default_rng([args.seed, 1])  # apart from the draws: the cases without bands are unchanged
    band_noise = (
        band_rng.uniform(*config["phot_error_frac"], (n, len(filters))),
        band_rng.standard_normal((n, len(filters))),
    )
    band_operator = PhotometryOperator(BAND_GRID_AA, load_throughputs(filters))
    components = {}
    for name, case in cases.items():
        lsf_name = "lsf_manga_R2000" if name == "combined" else name if name in lsf else "muse"
        this_model = model if lsf_name == "muse" else lsf_model(lsf[lsf_name])
        extra_av = 1.0 if name in ("young_dust", "combined") else 0.0
        young_logz = np.log10(0.2) if name in ("metal_poor_young", "combined") else 0.0
        key = (lsf_name, extra_av, young_logz)
        if key not in components:
            components[key] = mixture(
                this_model, d.young_x, host_x, d.fraction, d.av, d.sigma, d.velocity, young_logz, 0.0, extra_av
            )
        mix = components[key]
        stellar = mix["flux"]
        line_flux, hbeta = star_forming_lines(lam, stellar, d)
        extra = np.zeros_like(stellar)
        if name in ("balmer_lines", "combined"):
            extra = extra + emission_spectrum(lam, line_flux, d.gas_velocity, d.gas_sigma)
        at = np.argmin(np.abs(lam - 5000.0))
        neb_hbeta = None  # the nebular continuum's H beta flux per spectrum
        if name in ("nebular_continuum", "combined"):
            neb_hbeta = hbeta
        elif name == "nebular_continuum_strong":
            shape = nebular_continuum(lam, np.ones(n), d.av * GAS_AV_PER_STELLAR_AV, config["dust"]["law"])
            star5000 = stellar[:, at - 8 : at + 9].mean(1)
            neb_hbeta = d.nebular_share_5000 / (1 - d.nebular_share_5000) * star5000 / shape[:, at]
        neb = (
            np.zeros_like(stellar)
            if neb_hbeta is None
            else nebular_continuum(lam, neb_hbeta, d.av * GAS_AV_PER_STELLAR_AV, config["dust"]["law"])
        )
        share = neb[:, at] / (neb[:, at] + stellar[:, at - 8 : at + 9].mean(1))
        obs = observe(lam, stellar, extra + neb, d, config, noise_on_total=bool(neb.any()))
        pred = predictor.predict_normalised(obs["flux"], obs["error"], obs["mask"], batch_size=args.batch_size)
        error = {k: pred[k] - mix[k] for k in KEYS}
        cells = cell_table(pred, mix, d.fraction, base_error)
        entry = {**case, "cells": cells}
        if bands:
            phot, phot_error = band_fluxes(
                mix["photometry"],
                line_flux,
                d.gas_velocity,
                d.gas_sigma,
                d.av,
                band_noise,
                band_operator,
                config["dust"]["law"],
                name in ("balmer_lines", "combined"),
                neb_hbeta,
            )
            norm = obs["norm"][:, None]
            with_bands = predictor.predict_normalised(
                obs["flux"],
                obs["error"],
                obs["mask"],
                phot / norm,
                phot_error / norm,
                present,
                batch_size=args.batch_size,
            )
            band_cells = cell_table(with_bands, mix, d.fraction, error)
            entry["with_bands"] = {"cells": band_cells, "band_shift": summarise(band_cells)}
        if neb.any():
            entry["nebular_share_at_5000A"] = {
                "median": round(float(np.median(share)), 3),
                "p90": round(float(np.quantile(share, 0.9)), 3),
            }
            entry["hbeta_ew_aa_median"] = round(float(np.median(hbeta / stellar[:, at - 8 : at + 9].mean(1))), 1)
        if name == "baseline":
            base_error = error
            young_age = (d.young_x * np.log10(model.bin_age_yr)).sum(1)  # the young component's MW log age
            subsets = {
                "burst": d.young_kind == "burst",
                "constant_sf": d.young_kind == "constant",
                "young_age_lt_20Myr": young_age < np.log10(2e7),
                "young_age_20_100Myr": (young_age >= np.log10(2e7)) & (young_age < 8.0),
                "young_age_ge_100Myr": young_age >= 8.0,
            }
            entry["by_young_component"] = {
                label: [
                    {
                        "young_light_fraction": c["young_light_fraction"],
                        "n": c["n"],
                        "lw_age": c["lw_age"]["bias"],
                        "lw_logz": c["lw_logz"]["bias"],
                    }
                    for c in cell_table(
                        {k: pred[k][sel] for k in KEYS}, {k: mix[k][sel] for k in KEYS}, d.fraction[sel], None
                    )
                ]
                for label, sel in subsets.items()
            }
            entry["ood_above_1_share"] = round(float(np.mean(pred["ood"] > 1)), 3)
        else:
            entry["summary"] = summarise(cells)
            entry["ood_above_1_share"] = round(float(np.mean(pred["ood"] > 1)), 3)
        results[name] = entry
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    coverage = prior_coverage(args.trainset, model, predictor, args.batch_size)
    emission = training_emission(args.trainset)
    ranking = sorted(
        (
            {
                "case": name,
                "lw_age_shift_mixed": r["summary"]["lw_age_shift_mixed"],
                "lw_logz_shift_mixed": r["summary"]["lw_logz_shift_mixed"],
                "lw_age_shift_max": r["summary"]["lw_age_shift_max"],
                "lw_logz_shift_max": r["summary"]["lw_logz_shift_max"],
            }
            for name, r in results.items()
            if name not in ("baseline", "combined")
        ),
        key=lambda r: -(abs(r["lw_age_shift_mixed"]) + abs(r["lw_logz_shift_mixed"])),
    )
    figures = {
        "setup": {
            "trainset": args.trainset,
            "model": args.model,
            "ssp": args.ssp,
            "seed": args.seed,
            "n_per_cell": args.n_per_cell,
            "fractions": list(FRACTIONS),
            "host": f"all mass in {HOST_BIN_YR[0]:.0e}-{HOST_BIN_YR[1]:.0e} yr, log Z/Z_sun 0",
            "young": "burst in one bin of midpoint 7.5-300 Myr or constant SF over the last 10-200 Myr (equal odds)",
            "conditions": "S/N 30-60 per pixel (log-uniform), sigma 50-150 km/s, velocity +-50 km/s, A_V 0-1 "
            "(Calzetti), MUSE noise shape, no HST bands, no laser gap, no calibration distortion or sky spikes",
            "light_fraction": "young share of the attenuated stellar light in the normalisation window (the "
            "training's light weights); nebular continuum not counted",
            "shift": "median over the cell of (error in the case - error in the baseline), paired spectrum by spectrum",
            "seconds": round(time.perf_counter() - t0, 1),
            "bands": bands,
        },
        "cases": results,
        "prior_coverage": coverage,
        "training_emission": emission,
        "ranking_by_mixed_cells": ranking,
    }
    figures["conclusion"] = conclusion(figures)
    report(figures, args.save)


def band_key(name: str, filters: list[str]) -> str:
    """The training set's filter key of ``name`` (a key, or a UVIS band's short name: F438W)."""
    name = name.strip()
    key = name if name in filters else f"wfc3-uvis_{name.lower()}"
    if key not in filters:
        raise SystemExit(f"--bands: {name!r} is not among the training set's filters {filters}")
    return key


def model_margin(config: dict) -> float:
    from sfh_pipeline.constants import C_KMS

    return config["velocity_offset_kms"] + 5 * config["sigma_kms"][1] + C_KMS * config["redshift_max"]


def conclusion(figures: dict) -> str:
    """The paragraph of the brief, its numbers read from the figures."""
    cases, cov = figures["cases"], figures["prior_coverage"]

    def bias(case: str, f: float, key: str) -> float:
        return next(c for c in cases[case]["cells"] if c["young_light_fraction"] == f)[key]["bias"]

    def shift(case: str, key: str) -> float:
        return cases[case]["summary"][f"{key}_shift_mixed"]

    def young_sub(label: str, lo: float, hi: float, key: str) -> tuple[float, float]:
        values = [
            c[key] for c in cases["baseline"]["by_young_component"][label] if lo <= c["young_light_fraction"] <= hi
        ]
        return min(values), max(values)

    base = [c for c in cases["baseline"]["cells"] if 0.2 <= c["young_light_fraction"] <= 0.8]
    age_top = max(base, key=lambda c: c["lw_age"]["bias"])
    z_top = max(base, key=lambda c: c["lw_logz"]["bias"])
    cells = {c["young_light_fraction"]: c for c in cov["cells"]}
    dense = sum(cells[f]["share_of_old_hosts"] for f in (0.2, 0.35))
    sparse = sum(cells[f]["share_of_old_hosts"] for f in (0.65, 0.8, 0.9, 1.0))
    two = [cells[f].get("share_two_component_like", float("nan")) for f in (0.2, 0.35, 0.5)]
    zdrop = [cells[f].get("share_young_z_below_old_by_0.5dex", float("nan")) for f in (0.2, 0.35, 0.5)]
    test = [cells[f].get("test_lw_age", {}).get("bias", float("nan")) for f in (0.2, 0.35, 0.5, 0.65)]
    lsf = max(abs(shift(n, k)) for n in cases if n.startswith("lsf_") for k in ("lw_age", "lw_logz"))
    neb = cases["nebular_continuum"]["nebular_share_at_5000A"]["median"]
    very_young = young_sub("young_age_lt_20Myr", 0.2, 0.5, "lw_age")
    old_young = young_sub("young_age_ge_100Myr", 0.35, 0.65, "lw_age")
    old_young_z = young_sub("young_age_ge_100Myr", 0.35, 0.65, "lw_logz")
    comb_age = [bias("combined", f, "lw_age") for f in (0.5, 0.65, 0.8)]
    comb_z = [bias("combined", f, "lw_logz") for f in (0.5, 0.65, 0.8)]
    return (
        "Most of the young-regime error is in the network's reading of young-plus-old mixtures itself, before "
        "any realism effect: on mixtures from the training's own forward model (S/N 30-60, sigma 50-150 km/s) "
        f"its LW log age is {age_top['lw_age']['bias']:+.2f} dex too old at {age_top['young_light_fraction']:.0%} "
        f"young light ({very_young[0]:+.2f} to {very_young[1]:+.2f} when the young component is < 20 Myr, "
        f"scatter up to {max(c['lw_age']['scatter'] for c in base):.2f}) and its LW log Z "
        f"{z_top['lw_logz']['bias']:+.2f} dex too metal-rich at {z_top['young_light_fraction']:.0%}; with a young "
        f"component of >= 100 Myr it is instead too young ({old_young[0]:+.2f} to {old_young[1]:+.2f}) and too "
        f"metal-rich ({old_young_z[0]:+.2f} to {old_young_z[1]:+.2f}) at 35-65 %. "
        f"(a) The marginal prior is not the cause where the error peaks: {dense:.0%} of the training's old hosts "
        "(MW log age >= 9.6) have 15-43 % young light, and the network is unbiased on them in the test split "
        f"(LW age {test[0]:+.2f}, {test[1]:+.2f} at 20 and 35 %, {test[2]:+.2f}, {test[3]:+.2f} at 50 and 65 %), "
        f"but only {sparse:.1%} have > 57 % young light; what the prior lacks is the mixtures' configuration: "
        f"only {min(two):.1%}-{max(two):.1%} of those training spectra have < 5 % of their light at 0.4-8 Gyr "
        f"(the mixtures have none) and {min(zdrop):.1%}-{max(zdrop):.1%} have young stars >= 0.5 dex poorer than "
        "the old ones (the baseline error is largest where the marginal prior is densest). Ranked by the shift "
        "of the LW errors against the baseline in the 20-80 % cells: "
        f"(e) a 0.2 Z_sun young component on a solar host {shift('metal_poor_young', 'lw_age'):+.2f} dex in age "
        f"(up to {cases['metal_poor_young']['summary']['lw_age_shift_max']:+.2f}) and "
        f"{shift('metal_poor_young', 'lw_logz'):+.2f} in log Z (the network does not lower its log Z as far as the "
        f"truth falls); (c) a nebular continuum at 10-30 % of the 5000 A continuum "
        f"{shift('nebular_continuum_strong', 'lw_logz'):+.2f} in log Z "
        f"and {cases['nebular_continuum_strong']['summary']['lw_age_shift_max']:+.2f} in age for young-dominated "
        f"light, but at the level that H alpha EW 10-100 A implies ({neb:.1%} of the continuum) "
        f"{shift('nebular_continuum', 'lw_logz'):+.3f}; (d) A_V,young = A_V + 1 {shift('young_dust', 'lw_age'):+.2f} "
        f"in age, {shift('young_dust', 'lw_logz'):+.2f} in log Z; (b) star-forming Balmer and forbidden lines "
        f"{shift('balmer_lines', 'lw_age'):+.2f} / {shift('balmer_lines', 'lw_logz'):+.2f}: the 400 km/s mask "
        f"suffices; (f) the SDSS / MaNGA / 3.5 A LSF <= {lsf:.3f} dex. All together (b, c at the H alpha-tied "
        "level, d, e, MaNGA LSF) at "
        f"50-80 % young light: LW age {min(comb_age):+.2f} to {max(comb_age):+.2f}, LW log Z {min(comb_z):+.2f} to "
        f"{max(comb_z):+.2f} - the signs of the MaNGA star-forming spaxel's discrepancy (+0.53 / +0.32 against "
        "pPXF), the full size in age and half of it in log Z. NGC 3073's pattern (too young, too metal-rich) "
        "appears only where the "
        "young light is >= 100 Myr old, or for young-dominated light with a strong nebular continuum (which "
        "lowers log Z instead). Fix to make: add to the training prior an old-host-plus-young-component family "
        "(a burst or constant SF of 3-500 Myr on an old host, young light fractions spread over 0-100 %, no "
        "intermediate-age stars required) together with a metallicity history that lets the young bins be up to "
        "~1 dex poorer than the old ones (inflow of metal-poor gas): these are the two largest measured effects, "
        "and both are regions the prior barely samples. Adding a nebular continuum tied to the < 10 Myr light "
        "comes next (it matters only for H II-region-dominated spectra, EW(H beta) >~ 100 A); extending the "
        "birth-cloud dust to the whole young component is a 0.05 dex effect; the lines and the LSF need nothing."
    )


if __name__ == "__main__":
    main()
