"""The per-galaxy maps file (DESIGN.md contract) and painting bin values onto spaxels.

``results/<galaxy>/maps/<galaxy>_maps.fits`` and ``resources/mock/<galaxy>/truth.fits``
share one layout: an empty primary HDU with the metadata, then one image HDU per quantity,
every one with the MUSE celestial WCS:

=============== ========== ===================================================
HDU             planes     value
=============== ========== ===================================================
BIN_ID          1          Voronoi bin of the spaxel, -1 = not binned (int32)
SNR             1          continuum S/N of the bin
LW_AGE, MW_AGE  1          light- / mass-weighted <log10 age/yr>
LW_LOGZ, MW_LOGZ 1         light- / mass-weighted <log10 Z/Z_sun>
<each>_ERR      1          1-sigma uncertainty of the four above (dex)
SFH             n_bins     mass fraction formed per lookback-time bin (youngest first)
ZH              n_bins     log10 Z/Z_sun per bin
MASS_DENSITY    1          log10 present-day stellar mass surface density, M_sun kpc^-2
CHI2            1          reduced chi^2 of the forward-model check
OOD             1          out-of-distribution score of the bin's spectrum: Mahalanobis
                           distance of the network's spectral embedding from those of
                           held-out training spectra, in units of their 99th percentile
                           (> 1: less usual than 99 % of the training set); the four
                           ``_ERR`` maps are already multiplied by max(1, OOD). NaN in
                           truth files and for models without the reference.
SFH_ERR         n_bins     calibrated 68 % half-width of each SFH plane (mass fraction)
ZH_ERR          n_bins     calibrated 68 % half-width of each ZH plane (dex)
T50, T90        1          log10 lookback time (yr) by which 50 % / 90 % of the stellar
                           mass had formed (the network's own estimate; in truth files
                           :func:`sfh_pipeline.priors.formation_times` of the SFH planes)
T50_ERR,        1          calibrated 68 % half-width of T50 / T90 (dex)
T90_ERR
=============== ========== ===================================================

The last six were added after the first maps files were written (:data:`LATER_HDUS`): a file
without them reads with NaN planes, and so do maps of models whose predictor does not give
them. Truth files hold 0 in every ``_ERR`` plane inside the galaxy, NaN outside.

Header keywords of the primary HDU: ``AGEBIN00`` ... ``AGEBINnn`` (bin edges, yr),
``NAGEBIN``, ``GALAXY``, ``DIST_MPC``, ``MODEL`` and ``MODELSHA`` (name and sha256 of the
model file, or "truth"), ``ZSUN_REF``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .atomic import atomic_path

SUMMARY_HDUS = ("LW_AGE", "MW_AGE", "LW_LOGZ", "MW_LOGZ")
#: Every image HDU of a maps file, in order, with its BUNIT.
MAP_HDUS = {
    "BIN_ID": "",
    "SNR": "",
    **{name: unit for key in SUMMARY_HDUS
       for name, unit in ((key, "dex"), (f"{key}_ERR", "dex"))},
    "SFH": "",
    "ZH": "dex",
    "MASS_DENSITY": "dex(solMass / kpc2)",
    "CHI2": "",
    "OOD": "",
    "SFH_ERR": "",
    "ZH_ERR": "dex",
    "T50": "dex(yr)",
    "T50_ERR": "dex",
    "T90": "dex(yr)",
    "T90_ERR": "dex",
}
#: HDUs with one plane per lookback-time bin, (n_bins, ny, nx); every other one is (ny, nx).
PLANE_HDUS = ("SFH", "ZH", "SFH_ERR", "ZH_ERR")
#: Lookback-time ranges (yr) in which compare_with_truth sums the SFH: the fine bins are too
#: degenerate for a per-bin verdict, these ranges are not.
COARSE_SFH_EDGES_YR = (0.0, 1e8, 1e9, 5e9, np.inf)
#: Planes added after the first maps files were written: files without them still read (NaN).
LATER_HDUS = ("OOD", "SFH_ERR", "ZH_ERR", "T50", "T50_ERR", "T90", "T90_ERR")
#: The later per-bin columns of a tile table (same names as their HDUs): tables written
#: before them still assemble (NaN maps).
LATER_COLUMNS = ("OOD", "SFH_ERR", "ZH_ERR", "T50", "T50_ERR", "T90", "T90_ERR")
DESCRIPTIONS = {
    "BIN_ID": "Voronoi bin index of the spaxel; -1 = not binned",
    "SNR": "continuum signal-to-noise ratio of the bin",
    "LW_AGE": "light-weighted <log10 age/yr>",
    "MW_AGE": "mass-weighted <log10 age/yr>",
    "LW_LOGZ": "light-weighted <log10 Z/Zsun>",
    "MW_LOGZ": "mass-weighted <log10 Z/Zsun>",
    "SFH": "mass fraction formed per lookback-time bin (plane i: AGEBIN(i)-AGEBIN(i+1))",
    "ZH": "log10 Z/Zsun per lookback-time bin",
    "MASS_DENSITY": "log10 present-day stellar mass per kpc^2",
    "CHI2": "reduced chi^2 of the forward-model check (spectrum rebuilt from SFH and ZH)",
    "OOD": "out-of-distribution score: spectral-embedding distance / its 99th pct in training; _ERR x max(1, OOD)",
    "T50": "log10 lookback time/yr by which 50% of the stellar mass had formed",
    "T90": "log10 lookback time/yr by which 90% of the stellar mass had formed",
}


def write_age_bin_edges(header: fits.Header, edges_yr) -> None:
    """Store lookback-time bin edges (yr) as ``NAGEBIN`` and ``AGEBIN00``... keywords."""
    header["NAGEBIN"] = (len(edges_yr) - 1, "number of lookback-time bins")
    for i, edge in enumerate(edges_yr):
        header[f"AGEBIN{i:02d}"] = (float(edge), "lookback-time bin edge, yr")


def read_age_bin_edges(header: fits.Header) -> np.ndarray:
    """Lookback-time bin edges (yr) written by :func:`write_age_bin_edges`."""
    return np.array([header[f"AGEBIN{i:02d}"] for i in range(header["NAGEBIN"] + 1)])


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


def write_maps(path: str | os.PathLike, images: Mapping[str, np.ndarray], wcs: WCS,
               age_bin_edges_yr: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Write a maps file atomically.

    Parameters
    ----------
    images : every key of :data:`MAP_HDUS`; 2-D (ny, nx) images, those of :data:`PLANE_HDUS`
        (``SFH``, ``ZH`` and their ``_ERR``) (n_bins, ny, nx).
    wcs : the celestial WCS of the spaxel grid.
    age_bin_edges_yr : (n_bins + 1,) lookback-time bin edges, yr.
    meta : extra primary-header keywords (``GALAXY``, ``DIST_MPC``, ``MODEL``, ...).
    """
    missing = [name for name in MAP_HDUS if name not in images]
    if missing:
        raise ValueError(f"maps for {path}: missing {missing}")
    edges = np.asarray(age_bin_edges_yr, dtype=float)
    shape = np.shape(images["BIN_ID"])
    primary = fits.PrimaryHDU()
    write_age_bin_edges(primary.header, edges)
    for key, value in meta.items():
        primary.header[key] = value
    hdus = [primary]
    celestial = wcs.celestial.to_header()
    for name, unit in MAP_HDUS.items():
        data = np.asarray(images[name])
        expected = (edges.size - 1,) + tuple(shape) if name in PLANE_HDUS else tuple(shape)
        if data.shape != expected:
            raise ValueError(f"maps for {path}: {name} has shape {data.shape}, expected {expected}")
        data = data.astype(np.int32 if name == "BIN_ID" else np.float32)
        hdu = fits.ImageHDU(data, header=celestial.copy(), name=name)
        hdu.header["BUNIT"] = unit
        hdu.header["COMMENT"] = DESCRIPTIONS.get(name, DESCRIPTIONS.get(name.removesuffix("_ERR"), "")) + (
            " (1-sigma uncertainty)" if name.endswith("_ERR") else "")
        hdus.append(hdu)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def read_maps(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], WCS, np.ndarray, fits.Header]:
    """Images, celestial WCS, age-bin edges (yr) and primary header of a maps file."""
    path = Path(path)
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        names = [h.name for h in hdul[1:]]
        missing = [name for name in MAP_HDUS if name not in names and name not in LATER_HDUS]
        if missing:
            raise ValueError(f"{path}: not a maps file, missing HDUs {missing}")
        shape = hdul["BIN_ID"].data.shape
        edges = read_age_bin_edges(header)
        images = {name: np.array(hdul[name].data) if name in names
                  else np.full(((edges.size - 1,) if name in PLANE_HDUS else ()) + shape, np.nan, np.float32)
                  for name in MAP_HDUS}
        wcs = WCS(hdul["BIN_ID"].header).celestial
    return images, wcs, edges, header


def spaxel_area_kpc2(wcs: WCS, distance_mpc: float) -> float:
    """Area of one spaxel at the galaxy's distance, kpc^2."""
    from .psf import pixel_scale_arcsec

    side_kpc = pixel_scale_arcsec(wcs) * np.pi / 648000.0 * distance_mpc * 1e3
    return side_kpc**2


def assemble_maps(bins_path, tile_tables: list, row: Mapping[str, Any], model_path, out_path) -> dict[str, Any]:
    """Paint the per-bin results of every tile onto the spaxels and write the maps file.

    Every bin of ``bins_path`` must appear in exactly one tile table. Tables without a column
    of :data:`LATER_COLUMNS` (written before it existed) give NaN maps of it. Returns a
    summary (bins, median chi^2).
    """
    from .fetch import sha256_of
    from .infer import read_tile_tables
    from .observe import read_bins
    from .phangs import DataError

    bin_id, bin_snr, _ = read_bins(bins_path)
    with fits.open(bins_path) as hdul:
        wcs = WCS(hdul["BIN_ID"].header).celestial
    rows = read_tile_tables(tile_tables)
    n_bins = bin_snr.size
    ids = rows["BIN_ID"]
    if ids.size != n_bins or not np.array_equal(np.sort(ids), np.arange(n_bins)):
        missing = np.setdiff1d(np.arange(n_bins), ids)
        raise DataError(f"tile tables of {bins_path} do not cover every bin once (missing {missing[:10].tolist()}, "
                        f"{ids.size} rows for {n_bins} bins): rerun the infer jobs of this galaxy")
    order = np.argsort(ids)
    per_bin = {name: values[order] for name, values in rows.items()}
    with fits.open(tile_tables[0]) as hdul:
        edges = read_age_bin_edges(hdul["BINS"].header)
    area = spaxel_area_kpc2(wcs, float(row["distance_mpc"])) * per_bin["N_SPAXELS"]
    images = {"BIN_ID": bin_id, "SNR": paint(bin_id, bin_snr),
              "MASS_DENSITY": paint(bin_id, per_bin["LOG_MSTAR"] - np.log10(area)),
              "CHI2": paint(bin_id, per_bin["CHI2"]),
              "SFH": paint(bin_id, per_bin["SFH"]), "ZH": paint(bin_id, per_bin["ZH"])}
    for key in SUMMARY_HDUS:
        images[key] = paint(bin_id, per_bin[key])
        images[f"{key}_ERR"] = paint(bin_id, per_bin[f"{key}_ERR"])
    for name in LATER_COLUMNS:
        if name in per_bin:
            images[name] = paint(bin_id, per_bin[name])
        else:
            planes = (edges.size - 1,) if name in PLANE_HDUS else ()
            images[name] = np.full(planes + bin_id.shape, np.nan, np.float32)
    digest = sha256_of(model_path)
    meta = {"GALAXY": str(row["galaxy"]), "DIST_MPC": (float(row["distance_mpc"]), "distance, Mpc"),
            "MODEL": (os.path.basename(os.path.dirname(os.path.abspath(model_path))), "model name"),
            "MODELSHA": (digest[:16], "sha256 of model.pt (first 16 hex digits)"),
            "VSYS": (float(row["systemic_velocity_kms"]), "systemic velocity, km/s"),
            "EBV_GAL": (float(row["ebv_galactic"]), "Galactic E(B-V) corrected, mag")}
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


def compare_with_truth(maps_path, truth_path, bins_path, row: Mapping[str, Any]) -> dict[str, Any]:
    """Recovered maps against a mock galaxy's truth, bin by bin.

    The truth of a bin is the truth of its spaxels averaged with the weights that define the
    quantity: the continuum signal (``SIGNAL`` of the bins file) for light-weighted, the
    stellar mass (``MASS_DENSITY`` of the truth) for mass-weighted ones. Per quantity:
    Spearman rho over bins, median |recovered - true| and bias (dex); and the radial
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

    from .priors import formation_times

    images, wcs, edges, _ = read_maps(maps_path)
    truth, _, truth_edges, _ = read_maps(truth_path)
    with fits.open(bins_path) as hdul:
        signal = np.asarray(hdul["SIGNAL"].data, float)
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
    for key in SUMMARY_HDUS:
        weights = light if key.startswith("LW") else mass
        true = bin_mean(truth[key][inside], weights)
        recovered = bin_value(images[key])
        ok = np.isfinite(true) & np.isfinite(recovered)
        delta = recovered[ok] - true[ok]
        result[key.lower()] = {
            "spearman_rho": spearman(recovered[ok], true[ok]),
            "median_abs_dex": float(np.median(np.abs(delta))),
            "bias_dex": float(np.median(delta)),
            "n": int(ok.sum()),
        }
        if key.endswith("LOGZ"):
            result[key.lower()]["gradient_true_dex_per_arcsec"] = float(np.polyfit(r_bin[ok], true[ok], 1)[0])
            result[key.lower()]["gradient_recovered_dex_per_arcsec"] = float(np.polyfit(r_bin[ok], recovered[ok], 1)[0])
    with np.errstate(divide="ignore"):
        true = np.log10(bin_mean(mass, np.ones(ids.size)))
    recovered = bin_value(images["MASS_DENSITY"])
    ok = np.isfinite(true) & np.isfinite(recovered)
    result["mass_density"] = {"spearman_rho": spearman(recovered[ok], true[ok]),
                              "median_abs_dex": float(np.median(np.abs(recovered[ok] - true[ok]))),
                              "bias_dex": float(np.median(recovered[ok] - true[ok])), "n": int(ok.sum())}
    result["sfh_coarse"] = []
    for lo, hi in zip(COARSE_SFH_EDGES_YR[:-1], COARSE_SFH_EDGES_YR[1:]):
        planes = (edges[:-1] >= lo) & (edges[1:] <= hi)
        true = bin_mean(truth["SFH"][planes].sum(0)[inside], mass)
        recovered = bin_value(images["SFH"][planes].sum(0))
        ok = np.isfinite(true) & np.isfinite(recovered)
        result["sfh_coarse"].append({"age_min_yr": float(lo), "age_max_yr": float(min(hi, edges[-1])),
                                     "true_mean": float(true[ok].mean()), "recovered_mean": float(recovered[ok].mean()),
                                     "bias": float(np.median(recovered[ok] - true[ok])),
                                     "median_abs": float(np.median(np.abs(recovered[ok] - true[ok])))})
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

    from .psf import pixel_scale_arcsec

    pointings = [read_maps(p) for p in paths]
    edges = pointings[0][2]
    for path, (_, _, other, _) in zip(paths, pointings):
        if not np.array_equal(other, edges):
            raise ValueError(f"{path}: age bins differ from those of {paths[0]}; were they made by the same model?")
    scale = min(pixel_scale_arcsec(wcs) for _, wcs, _, _ in pointings)
    wcs_out, shape_out = find_optimal_celestial_wcs(
        [(images["BIN_ID"].shape, wcs) for images, wcs, _, _ in pointings], resolution=scale * u.arcsec)
    out = {name: np.full(((edges.size - 1,) if name in PLANE_HDUS else ()) + tuple(shape_out), np.nan, np.float32)
           for name in MAP_HDUS}
    out["BIN_ID"] = np.full(shape_out, -1, dtype=np.int64)
    offset = 0
    for images, wcs, _, _ in pointings:
        ids, _ = reproject_interp((images["BIN_ID"].astype(float), wcs), wcs_out, shape_out=shape_out,
                                  order="nearest-neighbor")
        take = np.isfinite(ids) & (ids >= 0) & (out["BIN_ID"] < 0)
        out["BIN_ID"][take] = ids[take].astype(np.int64) + offset
        for name in MAP_HDUS:
            if name == "BIN_ID":
                continue
            values, _ = reproject_interp((images[name].astype(float), wcs), wcs_out, shape_out=shape_out,
                                         order="nearest-neighbor")
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
