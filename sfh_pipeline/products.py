"""The products that pass between stages: their layouts, and the one place that writes and
reads each.

``results/<galaxy>/observe/`` (written by :mod:`sfh_pipeline.observe`):

* ``hst_on_muse.fits``: per HST band an image HDU ``<BAND>`` (flux per MUSE spaxel,
  photon-weighted mean f_lambda, erg s^-1 cm^-2 A^-1, NaN where the band has no data;
  ``PIVOT``: the band's pivot wavelength, A) and ``<BAND>_VAR`` (its variance), on the cube's
  celestial WCS (:func:`write_hst_on_muse`, :func:`read_hst_on_muse`);
* ``bins.fits``: ``BIN_ID`` (-1 = not binned), ``SNR`` (the bin's S/N painted on its
  spaxels), ``SIGNAL`` and ``NOISE`` (per spaxel, erg s^-1 cm^-2 A^-1) images and a ``BINS``
  table (bin id, S/N, number of spaxels, owner tile); primary keywords ``TARGETSN``,
  ``MINSN``, ``BINMETH``, ``TILESIZE`` (:func:`write_bins`, :func:`read_bins`);
* ``tiles.json``: the tiles that own at least one bin, one inference job each
  (:func:`write_tiles`, :func:`read_tiles`).

``results/<galaxy>/tiles/`` (written by :mod:`sfh_pipeline.infer`): one FITS table ``BINS``
per tile, one row per bin the tile owns, the columns of
:func:`sfh_pipeline.infer.infer_tile`; header ``TILE``, ``MODEL`` and the age-bin keywords
(:func:`write_tile_table`, :func:`read_tile_tables`). ``FLAG`` bits:
:data:`FLAG_NO_VELOCITY`.

``results/<galaxy>/maps/<galaxy>_maps.fits`` (:mod:`sfh_pipeline.maps`) and
``resources/mock/<galaxy>/truth.fits`` (:mod:`sfh_pipeline.mock`) share one layout
(:func:`write_maps`, :func:`read_maps`): an empty primary HDU with the metadata, then one
image HDU per quantity (:data:`MAP_HDUS`), every one with the MUSE celestial WCS:

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
EPISTEMIC       4          spread (standard deviation) of an ensemble's members' answers
                           (dex), one plane per summary in the order LW_AGE, MW_AGE,
                           LW_LOGZ, MW_LOGZ (header ``PLANE1`` ... ``PLANE4``); part of
                           the ``_ERR`` maps already (:mod:`sfh_pipeline.ensemble`); 0 for a
                           single model
=============== ========== ===================================================

The HDUs from ``OOD`` on were added after the first maps files were written
(:data:`LATER_HDUS`): a file without them reads with NaN planes, and so do maps of models
whose predictor does not give them. Truth files hold 0 in every ``_ERR`` and ``EPISTEMIC``
plane inside the galaxy, NaN outside.

Header keywords of the primary HDU: ``AGEBIN00`` ... ``AGEBINnn`` (bin edges, yr,
:func:`write_age_bin_edges`; tile tables carry them too), ``NAGEBIN``, ``GALAXY``,
``DIST_MPC``, ``MODEL`` and ``MODELSHA`` (name and :func:`sha256_of` of the model file, or
"truth"), ``ZSUN_REF``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from .atomic import atomic_path, write_json_atomically

if TYPE_CHECKING:
    from astropy.wcs import WCS

#: HDUs (and tile-table columns) of the four summary quantities; each has an ``_ERR``.
SUMMARY_HDUS = ("LW_AGE", "MW_AGE", "LW_LOGZ", "MW_LOGZ")
#: Every image HDU of a maps file, in order, with its BUNIT.
MAP_HDUS = {
    "BIN_ID": "",
    "SNR": "",
    **{name: unit for key in SUMMARY_HDUS for name, unit in ((key, "dex"), (f"{key}_ERR", "dex"))},
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
    "EPISTEMIC": "dex",
}
#: HDUs with one plane per lookback-time bin, (n_bins, ny, nx).
PLANE_HDUS = ("SFH", "ZH", "SFH_ERR", "ZH_ERR")
#: HDUs with one plane per summary quantity of :data:`SUMMARY_HDUS`, in that order, (4, ny, nx);
#: every HDU in neither tuple is (ny, nx).
SUMMARY_PLANE_HDUS = ("EPISTEMIC",)
#: Planes added after the first maps files were written, and the per-bin columns of the tile
#: tables they are painted from (same names), added at the same time: maps files without them
#: still read and tile tables without them still assemble (NaN planes).
LATER_HDUS = ("OOD", "SFH_ERR", "ZH_ERR", "T50", "T50_ERR", "T90", "T90_ERR", "EPISTEMIC")
#: The COMMENT of every maps HDU (those of ``<name>_ERR`` add "(1-sigma uncertainty)" to ``<name>``'s).
MAP_DESCRIPTIONS = {
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
    "EPISTEMIC": "spread (std) of an ensemble's members, planes LW_AGE MW_AGE LW_LOGZ MW_LOGZ; 0: one model",
}


def map_planes(name: str, n_age_bins: int) -> tuple[int, ...]:
    """The leading axes of the maps HDU ``name`` before (ny, nx): (n_age_bins,) for
    :data:`PLANE_HDUS`, (4,) for :data:`SUMMARY_PLANE_HDUS`, () for the others."""
    if name in PLANE_HDUS:
        return (n_age_bins,)
    if name in SUMMARY_PLANE_HDUS:
        return (len(SUMMARY_HDUS),)
    return ()


def sha256_of(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Return the SHA-256 digest of a file.

    Parameters
    ----------
    path : str or path-like
        File to hash.
    chunk_bytes : int, optional
        Read size, in bytes (default 1 MiB).

    Returns
    -------
    str
        The digest as 64 lower-case hexadecimal characters.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- age-bin keywords


def write_age_bin_edges(header: fits.Header, edges_yr) -> None:
    """Store lookback-time bin edges (yr) as ``NAGEBIN`` and ``AGEBIN00``... keywords."""
    header["NAGEBIN"] = (len(edges_yr) - 1, "number of lookback-time bins")
    for i, edge in enumerate(edges_yr):
        header[f"AGEBIN{i:02d}"] = (float(edge), "lookback-time bin edge, yr")


def read_age_bin_edges(header: fits.Header) -> np.ndarray:
    """Lookback-time bin edges (yr) written by :func:`write_age_bin_edges`."""
    return np.array([header[f"AGEBIN{i:02d}"] for i in range(header["NAGEBIN"] + 1)])


# ----------------------------------------------------------------------------- observe: bins, tiles, HST on MUSE


def write_bins(
    path: str | os.PathLike,
    bin_id: np.ndarray,
    bin_snr: np.ndarray,
    signal: np.ndarray,
    noise: np.ndarray,
    n_spaxels: np.ndarray,
    owner,
    wcs_header: fits.Header,
    meta: Mapping[str, Any],
) -> None:
    """Write a ``bins.fits`` file atomically (layout in the module docstring).

    ``bin_id`` (ny, nx), -1 = not binned; ``bin_snr``, ``n_spaxels``, ``owner`` (tile name, at
    most 8 characters): one per bin; ``signal``, ``noise``: per spaxel; ``wcs_header``: the
    cube's celestial WCS; ``meta``: primary-header keywords (``TARGETSN``, ...).
    """
    bin_snr = np.asarray(bin_snr)
    snr_map = np.where(bin_id >= 0, bin_snr[np.clip(bin_id, 0, None)], np.nan)
    images = {
        "BIN_ID": bin_id.astype(np.int32),
        "SNR": snr_map.astype(np.float32),
        "SIGNAL": signal.astype(np.float32),
        "NOISE": noise.astype(np.float32),
    }
    hdus = [fits.PrimaryHDU()]
    for key, value in meta.items():
        hdus[0].header[key] = value
    for name, data in images.items():
        hdus.append(fits.ImageHDU(data, header=wcs_header.copy(), name=name))
    hdus.append(
        fits.BinTableHDU.from_columns(
            [
                fits.Column("BIN_ID", "J", array=np.arange(bin_snr.size)),
                fits.Column("SNR", "E", array=bin_snr),
                fits.Column("N_SPAXELS", "J", array=n_spaxels),
                fits.Column("OWNER", "8A", array=np.asarray(owner, dtype="U8")),
            ],
            name="BINS",
        )
    )
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def read_bins(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, fits.Header]:
    """Bin map, per-bin S/N and primary header of a ``bins.fits`` file."""
    with fits.open(path) as hdul:
        return np.asarray(hdul["BIN_ID"].data), np.asarray(hdul["BINS"].data["SNR"], float), hdul[0].header.copy()


def read_bins_wcs(path: str | os.PathLike) -> WCS:
    """Celestial WCS of the spaxels of a ``bins.fits`` file (the cube's)."""
    from astropy.wcs import WCS

    with fits.open(path) as hdul:
        return WCS(hdul["BIN_ID"].header).celestial


def read_bins_signal(path: str | os.PathLike) -> np.ndarray:
    """The continuum signal of every spaxel (``SIGNAL``) of a ``bins.fits`` file."""
    with fits.open(path) as hdul:
        return np.asarray(hdul["SIGNAL"].data, float)


def read_tiles(path: str | os.PathLike) -> list[str]:
    """The tiles of a ``tiles.json`` file."""
    return json.loads(Path(path).read_text())["tiles"]


def write_tiles(path: str | os.PathLike, tile_spaxels: int, tiles: list[str], n_bins: int) -> None:
    """Write ``tiles.json`` atomically: the tiles that own bins, their size and the number of bins."""
    write_json_atomically(path, {"tile_spaxels": int(tile_spaxels), "tiles": tiles, "n_bins": int(n_bins)})


def write_hst_on_muse(
    path: str | os.PathLike, bands: Mapping[str, tuple[np.ndarray, np.ndarray, float]], wcs_header: fits.Header
) -> None:
    """Write ``hst_on_muse.fits`` atomically: ``bands`` is ``{band key: (flux, variance, pivot
    A)}`` on the cube's spaxels, ``wcs_header`` the cube's celestial WCS."""
    hdus = [fits.PrimaryHDU()]
    for key, (flux, var, pivot) in bands.items():
        for name, values, unit in (
            (key.upper(), flux, "erg/(s cm2 Angstrom)"),
            (f"{key.upper()}_VAR", var, "erg2/(s2 cm4 Angstrom2)"),
        ):
            hdu = fits.ImageHDU(values.astype(np.float32, copy=False), header=wcs_header.copy(), name=name)
            hdu.header["BUNIT"] = unit
            hdu.header["PIVOT"] = (pivot, "band pivot wavelength, A")
            hdus.append(hdu)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def read_hst_on_muse(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{band key: (flux, variance, pivot A)}`` images of an ``hst_on_muse.fits`` file."""
    out = {}
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            if not hdu.name.endswith("_VAR"):
                out[hdu.name.lower()] = (
                    np.asarray(hdu.data, float),
                    np.asarray(hdul[f"{hdu.name}_VAR"].data, float),
                    float(hdu.header["PIVOT"]),
                )
    return out


# ----------------------------------------------------------------------------- infer: tile tables


#: ``FLAG`` bit of a bin whose stellar velocity could not be measured within the allowed range.
FLAG_NO_VELOCITY = 1


def write_tile_table(path, columns: dict[str, np.ndarray], tile: str, model_path, age_bin_edges_yr) -> None:
    """Write a tile table atomically: ``columns`` by name, one row per bin (2-D arrays: one
    vector per row, float32), the tile's name, the model file and the age-bin edges (yr)."""
    cols = []
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim == 2:
            cols.append(fits.Column(name, f"{values.shape[1]}E", array=values.astype(np.float32)))
        elif name in ("BIN_ID", "N_SPAXELS", "N_BANDS", "FLAG"):
            cols.append(fits.Column(name, "J", array=values.astype(np.int32)))
        else:
            cols.append(fits.Column(name, "D", array=values.astype(np.float64)))
    hdu = fits.BinTableHDU.from_columns(cols, name="BINS")
    hdu.header["TILE"] = tile
    hdu.header["MODEL"] = str(model_path)
    write_age_bin_edges(hdu.header, age_bin_edges_yr)
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp)


def read_tile_age_bin_edges(path) -> np.ndarray:
    """The lookback-time bin edges (yr) of a tile table."""
    with fits.open(path) as hdul:
        return read_age_bin_edges(hdul["BINS"].header)


def read_tile_tables(paths) -> dict[str, np.ndarray]:
    """Rows of several tile tables concatenated, as arrays by column name.

    A column that some tables lack (written before it existed) is NaN in their rows."""
    tables = []
    for path in paths:
        with fits.open(path) as hdul:
            data = hdul["BINS"].data
            tables.append((len(data), {name: np.asarray(data[name]) for name in data.columns.names}))
    names = list(dict.fromkeys(name for _, columns in tables for name in columns))
    out = {}
    for name in names:
        example = next(columns[name] for _, columns in tables if name in columns)
        out[name] = np.concatenate(
            [columns[name] if name in columns else np.full((n,) + example.shape[1:], np.nan) for n, columns in tables]
        )
    return out


# ----------------------------------------------------------------------------- maps files


def write_maps(
    path: str | os.PathLike,
    images: Mapping[str, np.ndarray],
    wcs: WCS,
    age_bin_edges_yr: np.ndarray,
    meta: Mapping[str, Any],
) -> None:
    """Write a maps file atomically.

    Parameters
    ----------
    images : every key of :data:`MAP_HDUS`; 2-D (ny, nx) images, those of :data:`PLANE_HDUS`
        (``SFH``, ``ZH`` and their ``_ERR``) (n_bins, ny, nx), ``EPISTEMIC``
        (:data:`SUMMARY_PLANE_HDUS`) (4, ny, nx).
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
        expected = map_planes(name, edges.size - 1) + tuple(shape)
        if data.shape != expected:
            raise ValueError(f"maps for {path}: {name} has shape {data.shape}, expected {expected}")
        data = data.astype(np.int32 if name == "BIN_ID" else np.float32)
        hdu = fits.ImageHDU(data, header=celestial.copy(), name=name)
        hdu.header["BUNIT"] = unit
        if name in SUMMARY_PLANE_HDUS:
            for i, key in enumerate(SUMMARY_HDUS):
                hdu.header[f"PLANE{i + 1}"] = (key, f"quantity of plane {i + 1}")
        hdu.header["COMMENT"] = MAP_DESCRIPTIONS.get(name, MAP_DESCRIPTIONS.get(name.removesuffix("_ERR"), "")) + (
            " (1-sigma uncertainty)" if name.endswith("_ERR") else ""
        )
        hdus.append(hdu)
    with atomic_path(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


def read_maps(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], WCS, np.ndarray, fits.Header]:
    """Images, celestial WCS, age-bin edges (yr) and primary header of a maps file."""
    from astropy.wcs import WCS

    path = Path(path)
    with fits.open(path) as hdul:
        header = hdul[0].header.copy()
        names = [h.name for h in hdul[1:]]
        missing = [name for name in MAP_HDUS if name not in names and name not in LATER_HDUS]
        if missing:
            raise ValueError(f"{path}: not a maps file, missing HDUs {missing}")
        shape = hdul["BIN_ID"].data.shape
        edges = read_age_bin_edges(header)
        images = {
            name: np.array(hdul[name].data)
            if name in names
            else np.full(map_planes(name, edges.size - 1) + shape, np.nan, np.float32)
            for name in MAP_HDUS
        }
        wcs = WCS(hdul["BIN_ID"].header).celestial
    return images, wcs, edges, header
