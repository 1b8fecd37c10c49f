"""The ``maps`` stage: per-bin results painted onto spaxels, compared with a mock's truth,
and pointings combined.

The maps file's layout (``results/<galaxy>/maps/<galaxy>_maps.fits``, the same as a mock's
``truth.fits``) and its reader and writer are in :mod:`sfh_pipeline.products`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import astropy.units as u
import numpy as np
from astropy.wcs import WCS

from ..core.constants import ARCSEC_RAD
from ..core.products import (
    MAP_HDUS,
    PRODUCTS,
    SUMMARIES,
    map_planes,
    read_bins,
    read_bins_signal,
    read_bins_wcs,
    read_maps,
    read_tile_age_bin_edges,
    read_tile_tables,
    sha256_of,
    write_maps,
)

#: Lookback-time ranges (yr) in which compare_with_truth sums the SFH: the fine bins are too
#: degenerate for a per-bin verdict, these ranges are not.
COARSE_SFH_EDGES_YR = (0.0, 1e8, 1e9, 5e9, np.inf)


def paint(bin_id: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Spaxel images of per-bin values.

    Parameters
    ----------
    bin_id : (ny, nx) int array, -1 for spaxels in no bin.
    values : (n_bins_voronoi,) or (n_bins_voronoi, k) array, row i = bin i.

    Returns
    -------
    (ny, nx) or (k, ny, nx) float32 images, NaN where ``bin_id`` is -1.
    """
    values = np.asarray(values, dtype=np.float32)
    inside = bin_id >= 0
    if values.ndim == 1:
        out = np.full(bin_id.shape, np.nan, dtype=np.float32)
        out[inside] = values[bin_id[inside]]
        return out
    out = np.full((values.shape[1],) + bin_id.shape, np.nan, dtype=np.float32)
    out[:, inside] = values[bin_id[inside]].T
    return out


def spaxel_area_kpc2(wcs: WCS, distance_mpc: float) -> float:
    """Area of one spaxel at the galaxy's distance, kpc^2."""
    from ..core.psf import pixel_scale_arcsec

    side_kpc = pixel_scale_arcsec(wcs) * ARCSEC_RAD * distance_mpc * 1e3
    return side_kpc**2


def assemble_maps(bins_path, tile_tables: list, row: Mapping[str, Any], model_path, out_path) -> dict[str, Any]:
    """Paint the per-bin results of every tile onto the spaxels and write the maps file.

    Every bin of ``bins_path`` must appear in exactly one tile table. Each quantity of
    :data:`sfh_pipeline.products.PRODUCTS` with a tile-table column is that column painted;
    tables without the column of a quantity added later (written before it existed) give NaN
    maps of it. Returns a summary (bins, median chi^2).
    """
    from .phangs import DataError

    bin_id, bin_snr, _ = read_bins(bins_path)
    wcs = read_bins_wcs(bins_path)
    rows = read_tile_tables(tile_tables)
    n_bins = bin_snr.size
    ids = rows["BIN_ID"]
    if ids.size != n_bins or not np.array_equal(np.sort(ids), np.arange(n_bins)):
        missing = np.setdiff1d(np.arange(n_bins), ids)
        raise DataError(
            f"tile tables of {bins_path} do not cover every bin once (missing {missing[:10].tolist()}, "
            f"{ids.size} rows for {n_bins} bins): rerun the infer jobs of this galaxy"
        )
    order = np.argsort(ids)
    per_bin = {name: values[order] for name, values in rows.items()}
    edges = read_tile_age_bin_edges(tile_tables[0])
    area = spaxel_area_kpc2(wcs, float(row["distance_mpc"])) * per_bin["N_SPAXELS"]
    images = {
        "BIN_ID": bin_id,
        "SNR": paint(bin_id, bin_snr),
        "MASS_DENSITY": paint(bin_id, per_bin["LOG_MSTAR"] - np.log10(area)),
    }
    for quantity in PRODUCTS:
        if quantity.column is None:
            continue
        if quantity.column in per_bin or not quantity.later:  # every table has the first ones: KeyError else
            images[quantity.name] = paint(bin_id, per_bin[quantity.column])
        else:
            images[quantity.name] = np.full(
                map_planes(quantity.name, edges.size - 1) + bin_id.shape, np.nan, np.float32
            )
    digest = sha256_of(model_path)
    meta = {
        "GALAXY": str(row["galaxy"]),
        "DIST_MPC": (float(row["distance_mpc"]), "distance, Mpc"),
        "MODEL": (os.path.basename(os.path.dirname(os.path.abspath(model_path))), "model name"),
        "MODELSHA": (digest[:16], "sha256 of model.pt (first 16 hex digits)"),
        "VSYS": (float(row["systemic_velocity_kms"]), "systemic velocity, km/s"),
        "EBV_GAL": (float(row["ebv_galactic"]), "Galactic E(B-V) corrected, mag"),
    }
    write_maps(out_path, images, wcs, edges, meta)
    return {"n_bins": int(n_bins), "median_chi2": float(np.nanmedian(per_bin["CHI2"])) if n_bins else None}


def deprojected_radius_arcsec(wcs: WCS, shape: tuple[int, int], row: Mapping[str, Any]) -> np.ndarray:
    """Galactocentric radius of every spaxel in the disc plane, arcsec (centre, inclination and
    position angle from the sample-sheet row; PA east of north of the receding major axis)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ra, dec = wcs.pixel_to_world_values(xx, yy)
    dx = (ra - float(row["ra_deg"])) * np.cos(np.radians(float(row["dec_deg"]))) * 3600.0  # east
    dy = (dec - float(row["dec_deg"])) * 3600.0  # north
    pa = np.radians(float(row["position_angle_deg"]))
    major = dx * np.sin(pa) + dy * np.cos(pa)
    minor = (dx * np.cos(pa) - dy * np.sin(pa)) / np.cos(np.radians(float(row["inclination_deg"])))
    return np.hypot(major, minor)


def expected_spearman_rho(true_spread_dex: float, scatter_dex: float) -> float:
    """Spearman rho between a Gaussian truth of standard deviation ``true_spread_dex`` and an
    unbiased estimate with independent Gaussian errors of ``scatter_dex``: (6/pi) arcsin(r/2)
    with Pearson's r = spread / sqrt(spread^2 + scatter^2). A map's rho is bounded by how much
    its truth varies compared with the errors, whatever the method: 0.8 needs a scatter of at
    most 0.71 times the spread, 0.93 at most 0.38 times."""
    total = float(np.hypot(true_spread_dex, scatter_dex))
    if not total > 0:
        return float("nan")
    return float(6.0 / np.pi * np.arcsin(0.5 * true_spread_dex / total))


def compare_with_truth(maps_path, truth_path, bins_path, row: Mapping[str, Any]) -> dict[str, Any]:
    """Recovered maps against a mock galaxy's truth, bin by bin.

    The truth of a bin is the truth of its spaxels averaged with the weights that define the
    quantity: the continuum signal (``SIGNAL`` of the bins file) for light-weighted, the
    stellar mass (``MASS_DENSITY`` of the truth) for mass-weighted ones. Per quantity:
    Spearman rho over bins, median |recovered - true| and bias (dex), the spread of the truth
    over bins (standard deviation, dex), the scatter of recovered - true about its median
    (1.4826 MAD, dex) and the rho these two allow (:func:`expected_spearman_rho`); and the radial
    gradients (dex per arcsec, deprojected) of both metallicities in truth and recovery.
    ``mass_density``: the same figures for log10 of the bin's mean surviving stellar-mass
    surface density (M_sun/kpc^2). ``sfh_coarse``: per lookback-time range of
    :data:`COARSE_SFH_EDGES_YR`, the mass fraction formed in it (mass-weighted over the
    bin's spaxels), mean over bins in truth and recovery, ``bias`` (median recovered - true)
    and ``median_abs``. ``t50``, ``t90``: the same figures as for the summaries for the
    lookback times (log10 yr) by which 50 % / 90 % of the mass had formed; the true one of a
    bin is :func:`sfh_pipeline.priors.formation_times` of the bin's mass-weighted mean true
    SFH, the recovered one the map's ``T50`` / ``T90`` (statistics ``None``, ``n`` 0, for
    maps without them).
    """
    from scipy import stats

    from ..synth.priors import formation_times

    images, wcs, edges, _ = read_maps(maps_path)
    truth, _, truth_edges, _ = read_maps(truth_path)
    signal = read_bins_signal(bins_path)
    bin_id = images["BIN_ID"]
    if truth["BIN_ID"].shape != bin_id.shape:
        raise ValueError(f"{truth_path} has shape {truth['BIN_ID'].shape}, the maps {bin_id.shape}")
    inside = (bin_id >= 0) & (truth["BIN_ID"] >= 0)
    ids = bin_id[inside]
    n_bins = int(bin_id.max()) + 1
    radius = deprojected_radius_arcsec(wcs, bin_id.shape, row)
    mass = 10.0 ** truth["MASS_DENSITY"][inside]
    light = np.nan_to_num(signal[inside])

    def bin_mean(values, weights):
        total = np.bincount(ids, weights=weights, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.bincount(ids, weights=weights * values, minlength=n_bins) / total

    def bin_value(image):
        return np.bincount(ids, weights=image[inside], minlength=n_bins) / np.bincount(ids, minlength=n_bins)

    def spearman(recovered, true):
        # undefined (NaN) if either side is constant, as scipy says, but without its warning
        if np.all(recovered == recovered[:1]) or np.all(true == true[:1]):
            return float("nan")
        return float(stats.spearmanr(recovered, true).statistic)

    r_bin = bin_mean(radius[inside], np.ones(ids.size))
    result: dict[str, Any] = {"n_bins": n_bins}
    for quantity in SUMMARIES:
        key = quantity.name
        weights = light if quantity.weighting == "light" else mass
        true = bin_mean(truth[key][inside], weights)
        recovered = bin_value(images[key])
        ok = np.isfinite(true) & np.isfinite(recovered)
        delta = recovered[ok] - true[ok]
        spread = float(np.std(true[ok]))
        scatter = float(1.4826 * np.median(np.abs(delta - np.median(delta))))
        result[key.lower()] = {
            "spearman_rho": spearman(recovered[ok], true[ok]),
            "median_abs_dex": float(np.median(np.abs(delta))),
            "bias_dex": float(np.median(delta)),
            "n": int(ok.sum()),
            "true_spread_dex": spread,
            "scatter_dex": scatter,
            "spearman_rho_expected": expected_spearman_rho(spread, scatter),
        }
        if key.endswith("LOGZ"):
            result[key.lower()]["gradient_true_dex_per_arcsec"] = float(np.polyfit(r_bin[ok], true[ok], 1)[0])
            result[key.lower()]["gradient_recovered_dex_per_arcsec"] = float(np.polyfit(r_bin[ok], recovered[ok], 1)[0])
    with np.errstate(divide="ignore"):
        true = np.log10(bin_mean(mass, np.ones(ids.size)))
    recovered = bin_value(images["MASS_DENSITY"])
    ok = np.isfinite(true) & np.isfinite(recovered)
    result["mass_density"] = {
        "spearman_rho": spearman(recovered[ok], true[ok]),
        "median_abs_dex": float(np.median(np.abs(recovered[ok] - true[ok]))),
        "bias_dex": float(np.median(recovered[ok] - true[ok])),
        "n": int(ok.sum()),
    }
    result["sfh_coarse"] = []
    for lo, hi in zip(COARSE_SFH_EDGES_YR[:-1], COARSE_SFH_EDGES_YR[1:]):
        planes = (edges[:-1] >= lo) & (edges[1:] <= hi)
        true = bin_mean(truth["SFH"][planes].sum(0)[inside], mass)
        recovered = bin_value(images["SFH"][planes].sum(0))
        ok = np.isfinite(true) & np.isfinite(recovered)
        result["sfh_coarse"].append(
            {
                "age_min_yr": float(lo),
                "age_max_yr": float(min(hi, edges[-1])),
                "true_mean": float(true[ok].mean()),
                "recovered_mean": float(recovered[ok].mean()),
                "bias": float(np.median(recovered[ok] - true[ok])),
                "median_abs": float(np.median(np.abs(recovered[ok] - true[ok]))),
            }
        )
    true_sfh = np.stack([bin_mean(plane[inside], mass) for plane in truth["SFH"]], axis=-1)  # (n_bins, n_age)
    true_times = formation_times(true_sfh, truth_edges)
    for j, key in enumerate(("T50", "T90")):
        true = true_times[:, j]
        recovered = bin_value(images[key])
        ok = np.isfinite(true) & np.isfinite(recovered)
        delta = recovered[ok] - true[ok]
        result[key.lower()] = {
            "spearman_rho": spearman(recovered[ok], true[ok]) if ok.sum() > 1 else None,
            "median_abs_dex": float(np.median(np.abs(delta))) if ok.any() else None,
            "bias_dex": float(np.median(delta)) if ok.any() else None,
            "n": int(ok.sum()),
        }
    return result


def mosaic_maps(paths: list, out_path, galaxy: str) -> dict[str, Any]:
    """Combine the maps of several pointings of one galaxy onto one celestial WCS.

    The output grid is the optimal TAN grid covering every pointing at the finest pixel
    scale (``reproject.mosaicking.find_optimal_celestial_wcs``). Each pointing is reprojected
    with nearest-neighbour interpolation (values are constant within a bin, so nothing is
    blended across bins), and where pointings overlap the first one in ``paths`` that has a
    binned spaxel there wins for every map at once, so ``BIN_ID`` and the values stay
    consistent. Bin ids of later pointings are offset by the bins of the earlier ones, then
    the ids are renumbered 0..n-1 over the bins that show in the mosaic (a bin of a later
    pointing wholly under binned spaxels of an earlier one is not in it), in the same order,
    so ``BIN_ID.max() + 1`` is the number of bins as in any maps file; the returned
    ``n_bins`` is that number.
    """
    from reproject import reproject_interp
    from reproject.mosaicking import find_optimal_celestial_wcs

    from ..core.psf import pixel_scale_arcsec

    pointings = [read_maps(p) for p in paths]
    edges = pointings[0][2]
    for path, (_, _, other, _) in zip(paths, pointings):
        if not np.array_equal(other, edges):
            raise ValueError(f"{path}: age bins differ from those of {paths[0]}; were they made by the same model?")
    scale = min(pixel_scale_arcsec(wcs) for _, wcs, _, _ in pointings)
    wcs_out, shape_out = find_optimal_celestial_wcs(
        [(images["BIN_ID"].shape, wcs) for images, wcs, _, _ in pointings], resolution=scale * u.arcsec
    )
    out = {name: np.full(map_planes(name, edges.size - 1) + tuple(shape_out), np.nan, np.float32) for name in MAP_HDUS}
    out["BIN_ID"] = np.full(shape_out, -1, dtype=np.int64)
    offset = 0
    for images, wcs, _, _ in pointings:
        ids, _ = reproject_interp(
            (images["BIN_ID"].astype(float), wcs), wcs_out, shape_out=shape_out, order="nearest-neighbor"
        )
        take = np.isfinite(ids) & (ids >= 0) & (out["BIN_ID"] < 0)
        out["BIN_ID"][take] = ids[take].astype(np.int64) + offset
        for name in MAP_HDUS:
            if name == "BIN_ID":
                continue
            values, _ = reproject_interp(
                (images[name].astype(float), wcs), wcs_out, shape_out=shape_out, order="nearest-neighbor"
            )
            out[name][..., take] = values[..., take]
        offset += int(images["BIN_ID"].max()) + 1
    binned = out["BIN_ID"] >= 0
    shown, contiguous = np.unique(out["BIN_ID"][binned], return_inverse=True)
    out["BIN_ID"][binned] = contiguous
    header = pointings[0][3]
    meta = {key: header[key] for key in ("DIST_MPC", "MODEL", "MODELSHA") if key in header}
    meta.update({"GALAXY": galaxy, "NPOINT": (len(paths), "pointings combined")})
    write_maps(out_path, out, wcs_out, edges, meta)
    return {"shape": list(shape_out), "pointings": len(paths), "n_bins": int(shown.size)}
