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

from ..core.constants import L_SUN_ERG_S, MPC_CM
from ..core.dust import correct_galactic_extinction
from ..core.products import (
    FLAG_NO_VELOCITY,
    PRODUCTS,
    SUMMARY_KEYS,
    TILE_COLUMNS,
    map_planes,
    read_bins,
    read_hst_on_muse,
    write_tile_table,
)
from ..core.samples import require_columns
from ..core.spectral import sky_mask, velocity_to_redshift
from .covariance import covariance_alpha, error_factor
from .extract import bin_geometry, read_bin_box, read_box, sum_bins, wavelength_planes
from .phangs import MuseCube

log = logging.getLogger("sfh_pipeline.infer")  # the name it had before the layer folders


def velocity_template(ssp_store, age_bin_edges_yr, wave_aa: np.ndarray) -> np.ndarray:
    """A rest-frame template for velocities: constant SFR over all bins, solar metallicity,
    convolved to the MUSE LSF, on ``wave_aa`` (L_sun/A per M_sun)."""
    from ..ssp import load_ssp
    from ..synth.forward import ForwardModel

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
    ``batch_size``. Table columns: :data:`sfh_pipeline.products.TILE_COLUMNS`, in their order
    and with their units: what is measured here (velocity, the forward-model check, the HST
    bands used, the error factor for the covariance of the bin's spaxels,
    :mod:`sfh_pipeline.covariance`) and the maps quantities the network gives
    (:func:`network_columns`). A bin without a stellar velocity within the search range has
    ``FLAG`` :data:`~sfh_pipeline.products.FLAG_NO_VELOCITY` and NaN results.
    ``row`` may carry ``velocity_range_kms`` (see :func:`velocity_range_kms`).
    """
    from ..ml.predict import load_predictor
    from .forward_check import ForwardCheck

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
    values = {
        "BIN_ID": owned.astype(np.int32),
        "N_SPAXELS": geometry.n_spaxels[owned],
        "VELOCITY": velocity,
        "VELOCITY_ERR": velocity_err,
        "LOG_MSTAR": np.log10(np.where(mstar > 0, mstar, np.nan)),
        "CHI2": check["chi2"],
        "AV": check["av"],
        "SIGMA": check["sigma_kms"],
        "N_BANDS": prepared["present"].sum(1),
        "ERR_FACTOR": error_factors,
        "NORM": prepared["norm"],
        "FLAG": np.where(lost, FLAG_NO_VELOCITY, 0),
        **network_columns(result, owned.size, predictor.age_bin_edges_yr.size - 1),
    }
    columns = {}
    for column in TILE_COLUMNS:
        value = values[column.name]
        if column.needs_velocity:
            value = np.array(value, dtype=float)
            value[lost] = np.nan
        columns[column.name] = value
    write_tile_table(out_path, columns, tile, model_path, predictor.age_bin_edges_yr)
    return {"tile": tile, "n_bins": int(owned.size)}


def network_columns(result: dict[str, Any], n_bins: int, n_age_bins: int) -> dict[str, np.ndarray]:
    """The tile-table columns of the maps quantities the network gives
    (:attr:`sfh_pipeline.products.MapProduct.result_key`), by column name, from the
    predictor's ``result`` for ``n_bins`` spectra.

    A quantity added later (:attr:`~sfh_pipeline.products.MapProduct.later`) that an older
    predictor does not give is NaN; one with a plane per summary stacks the summaries' keys
    (n_bins, 4).
    """
    columns = {}
    for quantity in PRODUCTS:
        if quantity.result_key is None:
            continue
        if quantity.planes == "summaries":
            parts = [result.get(quantity.result_key.format(key)) for key in SUMMARY_KEYS]
            value = None if any(v is None for v in parts) else np.stack([np.asarray(v, float) for v in parts], axis=1)
        else:
            value = result.get(quantity.result_key) if quantity.later else result[quantity.result_key]
        if value is None:
            value = np.full((n_bins,) + map_planes(quantity.name, n_age_bins), np.nan)
        columns[quantity.column] = np.asarray(value, dtype=float)
    return columns
