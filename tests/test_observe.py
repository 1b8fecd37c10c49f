"""observe and maps on a small mock galaxy: HST onto MUSE, bins and tiles, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits

from sfh_pipeline.maps import assemble_maps
from sfh_pipeline.observe import bin_galaxy, hst_on_muse
from sfh_pipeline.phangs import DataError
from sfh_pipeline.products import read_bins, read_hst_on_muse

from .support.mock_galaxy import write

SETTINGS = {
    "snr_window_aa": [5300, 5500],
    "target_snr": 20,
    "min_snr": 2,
    "binning_method": "auto",
    "binning_tile_spaxels": 256,
    "tile_spaxels": 8,
}


@pytest.fixture(scope="module")
def galaxy(tmp_path_factory, analytic_ssp_store):
    root = tmp_path_factory.mktemp("observe")
    row, files, bands, recipe, summary = write(root, analytic_ssp_store)
    return root, row, files, bands


def band_files(files, bands):
    return {b: (files[f"{b}_sci"], files[f"{b}_wht"]) for b in bands}


def test_hst_on_muse_conserves_flux_and_leaves_gaps_nan(galaxy, tmp_path):
    root, row, files, bands = galaxy
    out = tmp_path / "hst_on_muse.fits"
    coverage = hst_on_muse(files["muse_cube"], band_files(files, bands), row["muse_psf_fwhm_arcsec"], 0.08, out)
    images = read_hst_on_muse(out)
    assert set(images) == set(bands)
    assert coverage["acs-wfc_f435w"] < 0.9 and all(coverage[b] == 1.0 for b in bands if b != "acs-wfc_f435w")
    for band in bands:
        flux, var, pivot = images[band]
        assert flux.shape == (20, 20) and pivot > 2000
        with fits.open(files[f"{band}_sci"]) as hdul:
            total_hst = np.nansum(hdul[0].data) * hdul[0].header["PHOTFLAM"]
        if band != "acs-wfc_f435w":
            # PSF matching spreads light beyond the MUSE field's edge: only a few per cent
            assert np.nansum(flux) == pytest.approx(total_hst, rel=0.05)
            assert np.all(var > 0)


def test_hst_in_blocks_of_rows_is_hst_at_once(galaxy, tmp_path, monkeypatch):
    """The HST stage reads, PSF-matches and reprojects a few MUSE rows at a time (memory bounded
    for mosaics): blocks of 3 rows (20 = 6 x 3 + 2) give the same images as one block. Only a
    spaxel that touches a gap in the data by a rounding error of its overlap may turn NaN."""
    from scipy.ndimage import binary_dilation

    from sfh_pipeline import observe

    root, row, files, bands = galaxy
    whole = tmp_path / "whole.fits"
    hst_on_muse(files["muse_cube"], band_files(files, bands), row["muse_psf_fwhm_arcsec"], 0.08, whole)
    monkeypatch.setattr(observe, "HST_BLOCK_ROWS", 3)
    blocks = tmp_path / "blocks.fits"
    hst_on_muse(files["muse_cube"], band_files(files, bands), row["muse_psf_fwhm_arcsec"], 0.08, blocks)
    for band, (flux, var, pivot) in read_hst_on_muse(whole).items():
        flux_b, var_b, pivot_b = read_hst_on_muse(blocks)[band]
        assert pivot_b == pivot
        changed = np.isnan(flux_b) != np.isnan(flux)
        assert changed.sum() <= 2 and not (changed & ~binary_dilation(np.isnan(flux))).any(), band
        both = ~np.isnan(flux_b) & ~np.isnan(flux)
        assert both.sum() >= 0.7 * flux.size
        np.testing.assert_allclose(flux_b[both], flux[both], rtol=1e-5, err_msg=band)
        np.testing.assert_allclose(var_b[both], var[both], rtol=1e-5, err_msg=band)


def test_hst_image_that_does_not_overlap_the_cube(galaxy, tmp_path):
    root, row, files, bands = galaxy
    band = bands[0]
    moved = tmp_path / "moved_sci.fits"
    with fits.open(files[f"{band}_sci"]) as hdul:
        hdul[0].header["CRVAL2"] += 1.0  # one degree north
        hdul.writeto(moved)
    with pytest.raises(DataError, match="does not overlap"):
        hst_on_muse(files["muse_cube"], {band: (moved, files[f"{band}_wht"])}, 0.9, 0.08, tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()


def test_bins_tiles_and_a_tile_of_nans(galaxy, tmp_path):
    root, row, files, bands = galaxy
    bins, tiles = tmp_path / "bins.fits", tmp_path / "tiles.json"
    summary = bin_galaxy(files["muse_cube"], row["systemic_velocity_kms"], SETTINGS, bins, tiles)
    bin_id, bin_snr, header = read_bins(bins)
    assert summary["n_bins"] == bin_snr.size == bin_id.max() + 1
    assert header["TARGETSN"] == 20
    with fits.open(bins) as hdul:
        owners = set(hdul["BINS"].data["OWNER"])
    listed = json.loads(tiles.read_text())["tiles"]
    assert set(listed) == owners and "y001x001" in listed  # only tiles that own bins get a job
    # the cube loses a whole tile (NaN, as outside a mosaic): no bin there, no job for that tile
    cube = tmp_path / "holed.fits"
    with fits.open(files["muse_cube"]) as hdul:
        hdul["DATA"].data[:, 8:16, 8:16] = np.nan
        hdul.writeto(cube)
    bin_galaxy(cube, row["systemic_velocity_kms"], SETTINGS, tmp_path / "b2.fits", tmp_path / "t2.json")
    holed, _, _ = read_bins(tmp_path / "b2.fits")
    assert np.all(holed[8:16, 8:16] == -1)
    assert "y001x001" not in json.loads((tmp_path / "t2.json").read_text())["tiles"]


def test_maps_refuse_missing_tiles(galaxy, tmp_path):
    root, row, files, bands = galaxy
    bin_galaxy(files["muse_cube"], row["systemic_velocity_kms"], SETTINGS, tmp_path / "bins.fits", tmp_path / "t.json")
    table = tmp_path / "one.fits"
    cols = [fits.Column("BIN_ID", "J", array=np.array([0], np.int32))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="BINS")]).writeto(table)
    with pytest.raises(DataError, match="do not cover every bin"):
        assemble_maps(tmp_path / "bins.fits", [table], row, tmp_path / "model.pt", tmp_path / "maps.fits")
    assert not (tmp_path / "maps.fits").exists()


def test_hst_read_only_around_the_cube(galaxy):
    from sfh_pipeline.phangs import HstImage, MuseCube

    root, row, files, bands = galaxy
    band = bands[0]
    cube = MuseCube.open(files["muse_cube"])
    full = HstImage.read(band, files[f"{band}_sci"], files[f"{band}_wht"])
    cut = HstImage.read(band, files[f"{band}_sci"], files[f"{band}_wht"], around=(cube.wcs, cube.shape, 0.2))
    assert cut.flux.size < full.flux.size
    # same sky position, same value
    ra, dec = cube.wcs.pixel_to_world_values(10, 10)
    xf, yf = (int(round(float(v))) for v in full.wcs.world_to_pixel_values(ra, dec))
    xc, yc = (int(round(float(v))) for v in cut.wcs.world_to_pixel_values(ra, dec))
    assert cut.flux[yc, xc] == full.flux[yf, xf]


# astropy warns that the file is shorter than its header says before reading it fails: that
# truncated file is this test's input, and the DataError below is what it checks
@pytest.mark.filterwarnings("ignore:File may have been truncated:astropy.utils.exceptions.AstropyUserWarning")
def test_corrupted_hst_file(galaxy, tmp_path):
    root, row, files, bands = galaxy
    band = bands[0]
    broken = tmp_path / "broken_sci.fits"
    broken.write_bytes(files[f"{band}_sci"].read_bytes()[:5000])
    with pytest.raises(DataError, match="not readable"):
        hst_on_muse(files["muse_cube"], {band: (broken, files[f"{band}_wht"])}, 0.9, 0.08, tmp_path / "x.fits")


def test_infer_flags_bins_without_a_velocity_instead_of_guessing(galaxy, tmp_path, tiny_model, analytic_ssp_store):
    """A systemic velocity 1000 km/s off with a 300 km/s search: no bin finds its stars, and every
    one gets NaN and FLAG 1 in a complete table (not a crash, not a population at the wrong z);
    with the right velocity the same tile is measured."""
    from sfh_pipeline.infer import infer_tile
    from sfh_pipeline.products import FLAG_NO_VELOCITY, read_tile_tables

    root, row, files, bands = galaxy
    bins, tiles = tmp_path / "bins.fits", tmp_path / "tiles.json"
    bin_galaxy(files["muse_cube"], row["systemic_velocity_kms"], SETTINGS, bins, tiles)
    hst = tmp_path / "hst.fits"
    hst_on_muse(files["muse_cube"], band_files(files, bands), row["muse_psf_fwhm_arcsec"], 0.1, hst)
    # the analytic library has a line every 37 A: a template shift of 1600-2300 km/s matches
    # again, so the offset and the range keep every such alias out of the search
    settings = {"tile_spaxels": 8, "velocity_range_kms": 300, "batch_size": 64}
    tile = json.loads(tiles.read_text())["tiles"][0]
    wrong = {**row, "systemic_velocity_kms": row["systemic_velocity_kms"] + 1000.0}
    infer_tile(
        files["muse_cube"], bins, hst, tiny_model, analytic_ssp_store, tile, wrong, settings, tmp_path / "wrong.fits"
    )
    table = read_tile_tables([tmp_path / "wrong.fits"])
    assert np.all(table["FLAG"] == FLAG_NO_VELOCITY)
    for column in ("VELOCITY", "LW_AGE", "LW_LOGZ_ERR", "LOG_MSTAR", "CHI2", "OOD"):
        assert np.all(np.isnan(table[column])), column
    assert np.all(np.isnan(table["SFH"]))
    infer_tile(
        files["muse_cube"], bins, hst, tiny_model, analytic_ssp_store, tile, row, settings, tmp_path / "right.fits"
    )
    table = read_tile_tables([tmp_path / "right.fits"])
    measured = table["FLAG"] == 0
    assert measured.mean() > 0.8
    assert np.all(np.isfinite(table["LW_AGE"][measured])) and np.all(np.isfinite(table["OOD"][measured]))
    assert np.all(np.abs(table["VELOCITY"][measured] - row["systemic_velocity_kms"]) < 300)
