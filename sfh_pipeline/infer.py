"""The ``infer`` stage: binned spectra + HST fluxes of one tile -> SFH, metallicities, checks.

For the bins a tile owns (:mod:`sfh_pipeline.extract`): sum the cube's spectra and the
PSF-matched HST fluxes, correct both for Galactic extinction, measure each bin's
line-of-sight velocity around the systemic one as ``predict`` does
(:meth:`sfh_pipeline.predict.Predictor.refine_velocity`, with a template made from the SSP
library), predict with the trained network in the bin's rest frame, run the forward-model
check and convert the check's mass into solar masses with the galaxy's distance. The result
is one FITS table per tile.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .constants import L_SUN_ERG_S, MPC_CM
from .covariance import covariance_alpha, error_factor
from .dust import correct_galactic_extinction
from .extract import bin_geometry, read_bin_box, read_box, sum_bins, wavelength_planes
from .phangs import MuseCube
from .products import FLAG_NO_VELOCITY, read_bins, read_hst_on_muse, write_tile_table
from .samples import require_columns
from .spectral import sky_mask, velocity_to_redshift

log = logging.getLogger(__name__)


def velocity_template(ssp_store, age_bin_edges_yr, wave_aa: np.ndarray) -> np.ndarray:
    """A rest-frame template for velocities: constant SFR over all bins, solar metallicity,
    convolved to the MUSE LSF, on ``wave_aa`` (L_sun/A per M_sun)."""
    from .forward import ForwardModel
    from .ssp import load_ssp

    model = ForwardModel(load_ssp(ssp_store), age_bin_edges_yr, wavelength_aa=wave_aa, max_velocity_kms=300.0)
    widths = np.diff(model.edges_yr)[None, :]
    return model.model(widths / widths.sum(), np.zeros((1, model.n_bins)), np.zeros(1), np.zeros(1)).flux[0]


def require_training_library(predictor, ssp_store) -> None:
    """Raise ValueError unless ``ssp_store`` holds the SSP library the model was trained with.

    The forward-model check and the stellar masses rebuild the network's SFH with this
    library; another one (e.g. a pretrained model run with another ``ssp`` section) would give
    masses and chi2 of a population the network never meant.
    """
    import zarr

    store = dict(zarr.open_group(ssp_store, mode="r").attrs)
    # the fetched file's checksum where both know it, else the library name (test libraries)
    key = "sha256" if predictor.ssp.get("sha256") and store.get("sha256") else "name"
    if predictor.ssp.get(key) and store.get(key) and predictor.ssp[key] != store[key]:
        raise ValueError(
            f"model {predictor.path} was trained on SSP library {predictor.ssp.get('name')!r} "
            f"(sha256 {predictor.ssp.get('sha256')}), but {ssp_store} is {store.get('name')!r} (sha256 "
            f"{store.get('sha256')}): configure the model's library in the ssp section"
        )


def velocity_range_kms(row: dict[str, Any], settings: dict[str, Any]) -> float:
    """Half-width (km/s) of the bin-velocity search: the sheet's ``velocity_range_kms`` of the
    galaxy when given, else ``settings['velocity_range_kms']``."""
    own = row.get("velocity_range_kms")
    try:
        own = float(own)
    except (TypeError, ValueError):
        own = float("nan")
    return own if np.isfinite(own) and own > 0 else float(settings["velocity_range_kms"])


def infer_tile(
    cube_path,
    bins_path,
    hst_path,
    model_path,
    ssp_store,
    tile: str,
    row: dict[str, Any],
    settings: dict[str, Any],
    out_path: str | os.PathLike,
) -> dict[str, Any]:
    """Predict every bin owned by ``tile`` and write its table (see module docstring).

    ``row``: the galaxy's sample-sheet row (``systemic_velocity_kms``, ``ebv_galactic``,
    ``distance_mpc``); ``settings``: ``tile_spaxels``, ``velocity_range_kms``,
    ``batch_size``. Table columns: BIN_ID, N_SPAXELS, VELOCITY (km/s, c ln(1+z)),
    VELOCITY_ERR, the four summaries and their ``_ERR`` (dex), SFH and ZH (n_bins each),
    LOG_MSTAR (log10 present-day stellar mass, M_sun), CHI2, AV (mag), SIGMA (km/s),
    N_BANDS (HST bands used), ERR_FACTOR (what the bin's error propagated from STAT was
    multiplied by for the covariance of its spaxels: 1 + alpha log10 N_SPAXELS, alpha measured
    on the tile, :mod:`sfh_pipeline.covariance`), NORM (erg s^-1 cm^-2 A^-1), OOD (out-of-distribution score of
    the spectrum, :meth:`sfh_pipeline.predict.Predictor.predict_normalised`), SFH_ERR and
    ZH_ERR (n_bins each: calibrated 68 % half-widths of SFH, mass fraction, and of ZH, dex),
    T50, T90 (log10 lookback time/yr by which 50 % / 90 % of the mass had formed) and their
    ``_ERR`` (dex) -- NaN when the predictor does not give them (``sfh_err``,
    ``logzsol_err``, ``t50``, ``t50_err``, ``t90``, ``t90_err`` of its result) --, EPISTEMIC
    (4 per bin: the spread of an ensemble's members, dex, in the order LW_AGE, MW_AGE, LW_LOGZ,
    MW_LOGZ, from ``<key>_epistemic``; 0 for a single model, NaN from a predictor without it), FLAG
    (bit 1: no stellar velocity within the search range; the bin's results are then NaN).
    ``row`` may carry ``velocity_range_kms`` (see :func:`velocity_range_kms`).
    """
    from .forward_check import ForwardCheck
    from .model import SUMMARY_KEYS  # imports torch: only here, not for the maps jobs
    from .predict import load_predictor

    cube = MuseCube.open(cube_path)
    bin_id, _, _ = read_bins(bins_path)
    if bin_id.shape != cube.shape:
        raise ValueError(f"{bins_path}: bin map {bin_id.shape} does not match the cube {cube.shape}; rerun observe")
    geometry = bin_geometry(bin_id, settings["tile_spaxels"])
    owned = geometry.owned_by(tile)
    if owned.size == 0:
        raise ValueError(
            f"tile {tile} owns no bin of {bins_path}; the tiles with bins are listed in tiles.json beside it"
        )
    v_sys, ebv, distance_mpc = require_columns(row, ("systemic_velocity_kms", "ebv_galactic", "distance_mpc"))
    predictor = load_predictor(model_path)
    require_training_library(predictor, ssp_store)
    rest = predictor.wavelength_aa
    v_range = velocity_range_kms(row, settings)
    planes = wavelength_planes(cube.wavelength_aa, (rest[0], rest[-1]), (v_sys - v_range, v_sys + v_range))
    wave = cube.wavelength_aa[planes]

    # the box of the tile's bins, read once: summed into bins, and (since STAT misses the
    # covariance of neighbouring spaxels) the covariance measured on its spaxels
    tile_flux, tile_var, origin = read_bin_box(cube, owned, geometry, planes)
    flux, var = sum_bins(bin_id, owned, tile_flux, origin), sum_bins(bin_id, owned, tile_var, origin)
    alpha = covariance_alpha(tile_flux, tile_var, ~sky_mask(wave))["alpha"]
    del tile_flux, tile_var
    error_factors = error_factor(alpha, geometry.n_spaxels[owned])
    flux, error = correct_galactic_extinction(wave, ebv, flux, np.sqrt(var))
    error = error * error_factors[:, None]

    photometry = {}
    ys, xs = read_box(owned, geometry)
    for band, (image, variance, pivot) in read_hst_on_muse(hst_path).items():
        if band not in predictor.filters:
            log.warning("band %s is not one the model was trained with; ignored", band)
            continue
        sums = sum_bins(bin_id, owned, np.stack([image[ys, xs], variance[ys, xs]]), (ys.start, xs.start))
        photometry[band] = correct_galactic_extinction(pivot, ebv, sums[:, 0], np.sqrt(sums[:, 1]))

    # the VELOCITY column is a product: measured against a template at rest exactly, not the
    # model's own (see refine_velocity)
    template_wave = np.arange(rest[0] - 100.0, rest[-1] + 100.0, 1.0)
    template = (template_wave, velocity_template(ssp_store, predictor.age_bin_edges_yr, template_wave))
    velocity, velocity_err = predictor.refine_velocity(
        wave, flux, error, velocity_to_redshift(v_sys), v_range, template=template
    )
    lost = ~np.isfinite(velocity)
    if lost.any():
        # A prediction at a wrong velocity looks like a population: these bins get NaN and a flag.
        log.warning(
            "%d of %d bins without a stellar velocity within %.0f +- %.0f km/s: their results are NaN (FLAG %d)",
            int(lost.sum()),
            lost.size,
            v_sys,
            v_range,
            FLAG_NO_VELOCITY,
        )
    z = velocity_to_redshift(np.where(lost, v_sys, velocity))
    prepared = predictor.prepare(wave, flux, error, photometry=photometry, z=z)
    result = predictor.predict_prepared(prepared, batch_size=int(settings["batch_size"]))
    check = ForwardCheck(ssp_store, predictor.age_bin_edges_yr, rest).fit(
        prepared["flux"], prepared["error"], prepared["mask"], result["sfh"], result["logzsol"]
    )
    distance_cm = distance_mpc * MPC_CM
    # normalised flux unit = norm erg/s/cm2/A -> L_sun/A at the galaxy's distance
    unit_lsun = prepared["norm"] * 4 * np.pi * distance_cm**2 / L_SUN_ERG_S
    mstar = check["mass_formed"] * unit_lsun * check["surviving_fraction"]
    columns = {
        "BIN_ID": owned.astype(np.int32),
        "N_SPAXELS": geometry.n_spaxels[owned],
        "VELOCITY": velocity,
        "VELOCITY_ERR": velocity_err,
        **{key.upper(): result[key] for key in SUMMARY_KEYS},
        **{f"{key.upper()}_ERR": result[f"{key}_err"] for key in SUMMARY_KEYS},
        "SFH": result["sfh"],
        "ZH": result["logzsol"],
        "LOG_MSTAR": np.log10(np.where(mstar > 0, mstar, np.nan)),
        "CHI2": check["chi2"],
        "AV": check["av"],
        "SIGMA": check["sigma_kms"],
        "N_BANDS": prepared["present"].sum(1),
        "ERR_FACTOR": error_factors,
        "NORM": prepared["norm"],
        "OOD": result["ood"],
    }
    n_age = predictor.age_bin_edges_yr.size - 1
    for key, shape in (
        ("sfh_err", (owned.size, n_age)),
        ("logzsol_err", (owned.size, n_age)),
        ("t50", (owned.size,)),
        ("t50_err", (owned.size,)),
        ("t90", (owned.size,)),
        ("t90_err", (owned.size,)),
    ):
        # a predictor that does not give one (an older one) leaves it NaN
        value = result.get(key)
        column = "ZH_ERR" if key == "logzsol_err" else key.upper()
        columns[column] = np.array(value, dtype=float) if value is not None else np.full(shape, np.nan)
    # the spread of an ensemble's members per summary (0 for one model); NaN from an older predictor
    spreads = [result.get(f"{key}_epistemic") for key in SUMMARY_KEYS]
    columns["EPISTEMIC"] = (
        np.stack([np.asarray(v, dtype=float) for v in spreads], axis=1)
        if all(v is not None for v in spreads)
        else np.full((owned.size, len(SUMMARY_KEYS)), np.nan)
    )
    for name, values in columns.items():
        if name not in ("BIN_ID", "N_SPAXELS", "N_BANDS", "VELOCITY", "VELOCITY_ERR", "ERR_FACTOR"):
            values[lost] = np.nan
    columns["FLAG"] = np.where(lost, FLAG_NO_VELOCITY, 0)
    write_tile_table(out_path, columns, tile, model_path, predictor.age_bin_edges_yr)
    return {"tile": tile, "n_bins": int(owned.size)}
