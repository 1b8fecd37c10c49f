"""The products that pass between stages: every writer and its reader agree."""

from __future__ import annotations

import hashlib

import numpy as np
from astropy.wcs import WCS

from sfh_pipeline import products


def celestial_header():
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [170.0625, 12.9915]
    wcs.wcs.crpix = [3.0, 2.0]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return wcs.to_header()


def test_sha256_of(tmp_path):
    data = hashlib.sha256(b"seed").digest() * 9000 + b"tail"
    f = tmp_path / "x.bin"
    f.write_bytes(data)
    assert products.sha256_of(f) == hashlib.sha256(data).hexdigest()
    assert products.sha256_of(f, chunk_bytes=7) == hashlib.sha256(data).hexdigest()


def test_bins_and_tiles_round_trip(tmp_path):
    bin_id = np.array([[0, 0, 1, -1], [2, 1, 1, -1], [2, 2, -1, -1]])
    bin_snr = np.array([30.0, 35.5, 40.0])
    signal = np.arange(12.0).reshape(3, 4)
    meta = {"TARGETSN": (35.0, "Voronoi target S/N"), "BINMETH": ("tiled", "binning method")}
    products.write_bins(
        tmp_path / "bins.fits",
        bin_id,
        bin_snr,
        signal,
        signal / 10,
        np.array([2, 3, 3]),
        ["t000_000", "t000_000", "t001_000"],
        celestial_header(),
        meta,
    )
    read_id, read_snr, header = products.read_bins(tmp_path / "bins.fits")
    np.testing.assert_array_equal(read_id, bin_id)
    np.testing.assert_allclose(read_snr, bin_snr, rtol=1e-6)
    assert header["TARGETSN"] == 35.0 and header["BINMETH"] == "tiled"
    np.testing.assert_allclose(products.read_bins_signal(tmp_path / "bins.fits"), signal)
    wcs = products.read_bins_wcs(tmp_path / "bins.fits")
    assert wcs.naxis == 2 and np.allclose(wcs.wcs.crval, [170.0625, 12.9915])

    products.write_tiles(tmp_path / "tiles.json", 32, ["t000_000", "t001_000"], 3)
    assert products.read_tiles(tmp_path / "tiles.json") == ["t000_000", "t001_000"]


def test_hst_on_muse_round_trip(tmp_path):
    flux = np.array([[1e-18, np.nan], [2e-18, 3e-18]])
    bands = {"wfc3-uvis_f555w": (flux, flux**2, 5308.4), "acs-wfc_f814w": (2 * flux, 4 * flux**2, 8045.5)}
    products.write_hst_on_muse(tmp_path / "hst.fits", bands, celestial_header())
    read = products.read_hst_on_muse(tmp_path / "hst.fits")
    assert list(read) == list(bands)
    for key, (f, v, pivot) in bands.items():
        np.testing.assert_allclose(read[key][0], f, rtol=1e-6)
        np.testing.assert_allclose(read[key][1], v, rtol=1e-6)
        assert read[key][2] == pivot


def test_tile_tables_round_trip_and_older_tables_without_the_later_columns(tmp_path):
    edges = [0.0, 1e8, 1e9, 1.4e10]
    new = {
        "BIN_ID": np.array([0, 1]),
        "LW_AGE": np.array([9.1, 9.5]),
        "SFH": np.full((2, 3), 1 / 3),
        "T50": np.array([9.0, 9.2]),
        "FLAG": np.array([0, products.FLAG_NO_VELOCITY]),
    }
    old = {"BIN_ID": np.array([2]), "LW_AGE": np.array([8.8]), "SFH": np.full((1, 3), 1 / 3), "FLAG": np.array([0])}
    products.write_tile_table(tmp_path / "a.fits", new, "t000_000", "model.pt", edges)
    products.write_tile_table(tmp_path / "b.fits", old, "t001_000", "model.pt", edges)
    rows = products.read_tile_tables([tmp_path / "a.fits", tmp_path / "b.fits"])
    np.testing.assert_array_equal(rows["BIN_ID"], [0, 1, 2])
    np.testing.assert_array_equal(rows["FLAG"], [0, products.FLAG_NO_VELOCITY, 0])
    assert rows["SFH"].shape == (3, 3)
    np.testing.assert_allclose(rows["T50"][:2], [9.0, 9.2])
    assert np.isnan(rows["T50"][2])  # "T50" is a later quantity: older tables lack it
    np.testing.assert_allclose(products.read_tile_age_bin_edges(tmp_path / "a.fits"), edges)


def test_the_table_of_maps_quantities_is_consistent():
    """Every name once; an uncertainty's quantity is declared, with the same planes; every
    unit is one astropy reads; the plane kinds, dtypes and truths are the known ones."""
    import astropy.units as u

    names = [quantity.name for quantity in products.PRODUCTS]
    assert len(set(names)) == len(names) and list(products.MAP_HDUS) == names
    for quantity in products.PRODUCTS:
        u.Unit(quantity.unit)
        assert quantity.planes in ("", "age_bins", "summaries") and np.dtype(quantity.dtype).kind in "if"
        assert quantity.truth in ("computed", "zero", "nan") and quantity.comment, quantity.name
        if quantity.error_of is not None:
            of = products.product(quantity.error_of)
            assert of.planes == quantity.planes and quantity.truth == "zero", quantity.name
        if quantity.planes == "summaries":
            assert "{}" in quantity.result_key, quantity.name
    assert products.SUMMARY_HDUS and all(f"{name}_ERR" in names for name in products.SUMMARY_HDUS)
    assert [q.weighting for q in products.SUMMARIES] == ["light", "mass", "light", "mass"]
    assert products.SUMMARY_KEYS == tuple(name.lower() for name in products.SUMMARY_HDUS)


def test_every_truth_key_is_an_array_of_the_training_set():
    from sfh_pipeline import trainset

    keys = [quantity.truth_key for quantity in products.PRODUCTS if quantity.truth_key]
    assert keys and all(f"``{key}``" in trainset.__doc__ for key in keys), keys


def test_every_painted_quantity_has_its_tile_column():
    """The maps are painted from the tile tables: every quantity's column is one of
    TILE_COLUMNS, once; a column without a description is a quantity's; the later
    quantities' columns come after the first ones, in the quantities' order."""
    columns = [column.name for column in products.TILE_COLUMNS]
    assert len(set(columns)) == len(columns)
    painted = [quantity.column for quantity in products.PRODUCTS if quantity.column]
    assert set(painted) <= set(columns) and len(set(painted)) == len(painted)
    for column in products.TILE_COLUMNS:
        assert column.description or column.name in painted, column.name
        if column.integer:
            assert not column.needs_velocity, column.name
    later = [quantity.column for quantity in products.PRODUCTS if quantity.later and quantity.column]
    assert columns[-len(later) - 1 : -1] == later and columns[-1] == "FLAG"
