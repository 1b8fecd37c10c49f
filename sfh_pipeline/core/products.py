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
per tile, one row per bin the tile owns, the columns of :data:`TILE_COLUMNS` in their
order; header ``TILE``, ``MODEL`` and the age-bin keywords
(:func:`write_tile_table`, :func:`read_tile_tables`). ``FLAG`` bits:
:data:`FLAG_NO_VELOCITY`.

``results/<galaxy>/maps/<galaxy>_maps.fits`` (:mod:`sfh_pipeline.maps`) and
``resources/mock/<galaxy>/truth.fits`` (:mod:`sfh_pipeline.mock`) share one layout
(:func:`write_maps`, :func:`read_maps`): an empty primary HDU with the metadata, then one
image HDU per quantity of :data:`PRODUCTS`, in its order, every one with the MUSE celestial
WCS. :data:`PRODUCTS` is the one declaration of these quantities (name, unit, planes, dtype,
the tile-table column it is painted from, the predictor's key, the truth); the readers,
writers, the stages and docs/contracts.md (checked by tests/test_contracts.py) follow it.

The HDUs marked ``later`` were added after the first maps files were written
(:data:`LATER_HDUS`): a file without them reads with NaN planes, and so do maps of models
whose predictor does not give them. Truth files hold 0 in every plane whose ``truth`` is
"zero" (the uncertainties and ``EPISTEMIC``) inside the galaxy, NaN outside.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from .atomic import atomic_path, write_json_atomically

if TYPE_CHECKING:
    from astropy.wcs import WCS


@dataclass(frozen=True)
class MapProduct:
    """One quantity of the maps files: an image HDU of ``<galaxy>_maps.fits`` and of a mock's
    ``truth.fits``, in :data:`PRODUCTS`."""

    #: HDU name (``EXTNAME``) and key of :func:`read_maps`' images; in lower case, the
    #: quantity's key in :func:`sfh_pipeline.maps.compare_with_truth`'s results.
    name: str
    #: ``BUNIT``: an astropy unit string, "" for a dimensionless quantity.
    unit: str
    #: The HDU's ``COMMENT`` (an uncertainty's is derived: see :meth:`comment`); "{summaries}"
    #: stands for the summaries' names.
    description: str
    #: Axes before (ny, nx): "" none, "age_bins" one plane per lookback-time bin (youngest
    #: first), "summaries" one plane per summary quantity, in :data:`SUMMARY_HDUS` order,
    #: named in the header (``PLANE1`` ...).
    planes: str = ""
    #: numpy dtype of the image in the file.
    dtype: str = "float32"
    #: The tile-table column (:data:`TILE_COLUMNS`) painted onto the spaxels; None for
    #: quantities the maps stage makes otherwise (``BIN_ID``, ``SNR``, ``MASS_DENSITY``).
    column: str | None = None
    #: Key of the predictor's result (:meth:`sfh_pipeline.predict.Predictor.predict`) that
    #: gives the column; for "summaries" planes a template filled with each summary's key;
    #: None if the network does not give it.
    result_key: str | None = None
    #: Array of the training set (:mod:`sfh_pipeline.trainset`) holding its truth
    #: (``true_<key>`` in the evaluation), if there is one.
    truth_key: str | None = None
    #: What a mock's truth file holds: "computed" (by :mod:`sfh_pipeline.mock`), "zero" (inside
    #: the galaxy, NaN outside: the truth has no uncertainty), "nan" (nothing to hold).
    truth: str = "computed"
    #: "light" or "mass" for a summary quantity: the population's mean with these weights.
    weighting: str | None = None
    #: The quantity whose uncertainty this is.
    error_of: str | None = None
    #: Added after the first maps files were written: files and tile tables without it read
    #: as NaN.
    later: bool = False

    @property
    def comment(self) -> str:
        """The HDU's ``COMMENT``: the description; for an uncertainty, its quantity's followed by
        "(1-sigma uncertainty)"."""
        if self.error_of is None:
            return self.description.format(summaries=" ".join(SUMMARY_HDUS))
        return f"{product(self.error_of).comment} (1-sigma uncertainty)"


def _error(of: MapProduct, unit: str, **changes) -> MapProduct:
    """The calibrated 1-sigma uncertainty of ``of`` (``<name>_ERR``, column ``<column>_ERR``,
    result key ``<key>_err``, 0 in the truth), in ``unit``."""
    fields = {
        "planes": of.planes,
        "column": f"{of.column}_ERR",
        "result_key": f"{of.result_key}_err",
        "truth": "zero",
        "error_of": of.name,
        "later": of.later,
    }
    return MapProduct(f"{of.name}_ERR", unit, "", **{**fields, **changes})


_SUMMARIES = (
    MapProduct(
        "LW_AGE",
        "dex",
        "light-weighted <log10 age/yr>",
        column="LW_AGE",
        result_key="lw_age",
        truth_key="lw_age",
        weighting="light",
    ),
    MapProduct(
        "MW_AGE",
        "dex",
        "mass-weighted <log10 age/yr>",
        column="MW_AGE",
        result_key="mw_age",
        truth_key="mw_age",
        weighting="mass",
    ),
    MapProduct(
        "LW_LOGZ",
        "dex",
        "light-weighted <log10 Z/Zsun>",
        column="LW_LOGZ",
        result_key="lw_logz",
        truth_key="lw_logz",
        weighting="light",
    ),
    MapProduct(
        "MW_LOGZ",
        "dex",
        "mass-weighted <log10 Z/Zsun>",
        column="MW_LOGZ",
        result_key="mw_logz",
        truth_key="mw_logz",
        weighting="mass",
    ),
)
_SFH = MapProduct(
    "SFH",
    "",
    "mass fraction formed per lookback-time bin (plane i: AGEBIN(i)-AGEBIN(i+1))",
    planes="age_bins",
    column="SFH",
    result_key="sfh",
    truth_key="sfh",
)
_ZH = MapProduct(
    "ZH",
    "dex",
    "log10 Z/Zsun per lookback-time bin",
    planes="age_bins",
    column="ZH",
    result_key="logzsol",
    truth_key="logzsol",
)
_T50 = MapProduct(
    "T50",
    "dex(yr)",
    "log10 lookback time/yr by which 50% of the stellar mass had formed",
    column="T50",
    result_key="t50",
    later=True,
)
_T90 = MapProduct(
    "T90",
    "dex(yr)",
    "log10 lookback time/yr by which 90% of the stellar mass had formed",
    column="T90",
    result_key="t90",
    later=True,
)

#: Every image HDU of a maps file (and of a mock's truth file), in the file's order: the one
#: declaration of the maps' quantities (docs/contracts.md shows it to users).
PRODUCTS: tuple[MapProduct, ...] = (
    MapProduct("BIN_ID", "", "Voronoi bin index of the spaxel; -1 = not binned", dtype="int32"),
    MapProduct("SNR", "", "continuum signal-to-noise ratio of the bin"),
    *(row for summary in _SUMMARIES for row in (summary, _error(summary, "dex"))),
    _SFH,
    _ZH,
    MapProduct("MASS_DENSITY", "dex(solMass / kpc2)", "log10 present-day stellar mass per kpc^2"),
    MapProduct(
        "CHI2",
        "",
        "reduced chi^2 of the forward-model check (spectrum rebuilt from SFH and ZH)",
        column="CHI2",
        truth="nan",
    ),
    MapProduct(
        "OOD",
        "",
        "out-of-distribution score: spectral-embedding distance / its 99th pct in training; _ERR x max(1, OOD)",
        column="OOD",
        result_key="ood",
        truth="nan",
        later=True,
    ),
    _error(_SFH, "", later=True),
    _error(_ZH, "dex", later=True),
    _T50,
    _error(_T50, "dex"),
    _T90,
    _error(_T90, "dex"),
    MapProduct(
        "EPISTEMIC",
        "dex",
        "spread (std) of an ensemble's members, planes {summaries}; 0: one model",
        planes="summaries",
        column="EPISTEMIC",
        result_key="{}_epistemic",
        truth="zero",
        later=True,
    ),
)
_BY_NAME = {p.name: p for p in PRODUCTS}


def product(name: str) -> MapProduct:
    """The maps quantity of HDU ``name`` (KeyError if there is none)."""
    return _BY_NAME[name]


#: The summary quantities (light- and mass-weighted means), in the order of ``EPISTEMIC``'s planes.
SUMMARIES = tuple(p for p in PRODUCTS if p.weighting)
#: Their HDUs (and tile-table columns); each has an ``_ERR``.
SUMMARY_HDUS = tuple(p.name for p in SUMMARIES)
#: Their keys in the predictor's results, the training set and the JSON reports.
SUMMARY_KEYS = tuple(p.result_key for p in SUMMARIES)
#: Every image HDU of a maps file, in order, with its BUNIT.
MAP_HDUS = {p.name: p.unit for p in PRODUCTS}
#: HDUs added after the first maps files were written, and the tile-table columns they are
#: painted from, added at the same time: maps files without them still read and tile tables
#: without them still assemble (NaN planes).
LATER_HDUS = tuple(p.name for p in PRODUCTS if p.later)


def map_planes(name: str, n_age_bins: int) -> tuple[int, ...]:
    """The leading axes of the maps HDU ``name`` before (ny, nx): (n_age_bins,) for one plane
    per lookback-time bin, (4,) for one per summary, () for the others."""
    planes = product(name).planes
    return {"": (), "age_bins": (n_age_bins,), "summaries": (len(SUMMARIES),)}[planes]


@dataclass(frozen=True)
class TileColumn:
    """One column of the tile tables (``BINS``, one row per bin), in :data:`TILE_COLUMNS`."""

    #: Column name.
    name: str
    #: What it holds, with its unit; "" for a column a maps quantity is painted from (its
    #: :attr:`MapProduct.description` then says it).
    description: str = ""
    #: Written as int32 (``J``); the others as float64 (``D``), per-row vectors as float32.
    integer: bool = False
    #: NaN in the rows of bins without a stellar velocity (``FLAG`` :data:`FLAG_NO_VELOCITY`):
    #: a result at a wrong velocity would look like a population.
    needs_velocity: bool = True


#: ``FLAG`` bit of a bin whose stellar velocity could not be measured within the allowed range.
FLAG_NO_VELOCITY = 1

#: The columns :func:`sfh_pipeline.infer.infer_tile` writes, in order; every
#: :attr:`MapProduct.column` is one of them (integers int32, other scalars float64, per-bin
#: vectors such as ``SFH`` float32; ``SFH``, ``ZH`` and their ``_ERR`` one value per age bin,
#: ``EPISTEMIC`` one per summary).
TILE_COLUMNS: tuple[TileColumn, ...] = (
    TileColumn("BIN_ID", "Voronoi bin", integer=True, needs_velocity=False),
    TileColumn("N_SPAXELS", "spaxels in the bin", integer=True, needs_velocity=False),
    TileColumn("VELOCITY", "line-of-sight stellar velocity, km/s, c ln(1+z)", needs_velocity=False),
    TileColumn("VELOCITY_ERR", "its 1-sigma uncertainty, km/s", needs_velocity=False),
    *(TileColumn(p.column) for p in SUMMARIES),
    *(TileColumn(p.column) for p in PRODUCTS if p.error_of in SUMMARY_HDUS),
    TileColumn("SFH"),
    TileColumn("ZH"),
    TileColumn("LOG_MSTAR", "log10 present-day stellar mass of the bin (forward-model check), M_sun"),
    TileColumn("CHI2"),
    TileColumn("AV", "A_V of the forward-model check, mag"),
    TileColumn("SIGMA", "stellar velocity dispersion of the forward-model check, km/s"),
    TileColumn("N_BANDS", "HST bands used", integer=True, needs_velocity=False),
    TileColumn(
        "ERR_FACTOR",
        "what the bin's error propagated from STAT was multiplied by for the covariance of its "
        "spaxels: 1 + alpha log10 N_SPAXELS, alpha measured on the tile (sfh_pipeline.covariance)",
        needs_velocity=False,
    ),
    TileColumn("NORM", "the spectrum's normalisation, erg s^-1 cm^-2 A^-1"),
    # the columns of the quantities added later, in their order (a new quantity's lands here)
    *(TileColumn(p.column) for p in PRODUCTS if p.later and p.column),
    TileColumn(
        "FLAG",
        f"bit {FLAG_NO_VELOCITY}: no stellar velocity within the search range",
        integer=True,
        needs_velocity=False,
    ),
)


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


_INTEGER_COLUMNS = {column.name for column in TILE_COLUMNS if column.integer}


def write_tile_table(path, columns: dict[str, np.ndarray], tile: str, model_path, age_bin_edges_yr) -> None:
    """Write a tile table atomically: ``columns`` by name, one row per bin (2-D arrays: one
    vector per row, float32), the tile's name, the model file and the age-bin edges (yr)."""
    cols = []
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim == 2:
            cols.append(fits.Column(name, f"{values.shape[1]}E", array=values.astype(np.float32)))
        elif name in _INTEGER_COLUMNS:
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
    images : every quantity of :data:`PRODUCTS` by name, (ny, nx) after its planes
        (:func:`map_planes`): (n_bins, ny, nx) for ``SFH``, ``ZH`` and their ``_ERR``,
        (4, ny, nx) for ``EPISTEMIC``.
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
    for quantity in PRODUCTS:
        name = quantity.name
        data = np.asarray(images[name])
        expected = map_planes(name, edges.size - 1) + tuple(shape)
        if data.shape != expected:
            raise ValueError(f"maps for {path}: {name} has shape {data.shape}, expected {expected}")
        hdu = fits.ImageHDU(data.astype(quantity.dtype), header=celestial.copy(), name=name)
        hdu.header["BUNIT"] = quantity.unit
        if quantity.planes == "summaries":
            for i, key in enumerate(SUMMARY_HDUS):
                hdu.header[f"PLANE{i + 1}"] = (key, f"quantity of plane {i + 1}")
        hdu.header["COMMENT"] = quantity.comment
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
