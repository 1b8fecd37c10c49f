"""Mock galaxies: written in the PHANGS layouts, read back by our readers, truths that make sense."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from sfh_pipeline.filters import load_throughputs
from sfh_pipeline.forward import DEFAULT_AGE_BIN_EDGES_YR
from sfh_pipeline.mock import galaxy_structure
from sfh_pipeline.phangs import HstImage, MuseCube
from sfh_pipeline.products import MAP_HDUS, PRODUCTS, map_planes, read_maps
from sfh_pipeline.ssp import load_ssp

from .support.mock_galaxy import SIZE, UNCOVERED, write


@pytest.fixture(scope="module")
def mock(tmp_path_factory, analytic_ssp_store):
    ssp = load_ssp(analytic_ssp_store)
    # the fixture library must cover the MUSE range (with velocity margins) and the HST bands
    assert ssp.wavelength_aa[0] <= 2000 and ssp.wavelength_aa[-1] >= 9800
    root = tmp_path_factory.mktemp("mock")
    return (root, *write(root, analytic_ssp_store))


def test_cube_reads_as_phangs_muse(mock):
    root, row, files, bands, recipe, summary = mock
    cube = MuseCube.open(files["muse_cube"])
    assert cube.shape == tuple(SIZE) and cube.flux_scale == pytest.approx(1e-20)
    assert cube.wavelength_aa.size == 3681
    np.testing.assert_allclose(cube.wavelength_aa[[0, 1, -1]], [4749.75, 4751.0, 9349.75])
    flux, var = cube.read_tile(slice(0, SIZE[0]), slice(0, SIZE[1]))
    assert np.all(np.isfinite(flux)) and np.all(var > 0)
    ra, dec = cube.wcs.pixel_to_world_values((SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2)
    assert (ra, dec) == pytest.approx((row["ra_deg"], row["dec_deg"]), abs=1e-9)
    with fits.open(files["muse_cube"]) as hdul:
        assert hdul[0].data is None and hdul[0].header["OBJECT"] == "MOCK-ACS"
        assert [h.name for h in hdul[1:]] == ["DATA", "STAT"]
        for hdu in hdul[1:]:
            assert hdu.data.dtype.name in ("float32", ">f4") and hdu.header["BUNIT"] == "10**(-20)*erg/s/cm**2/Angstrom"
            assert hdu.header["CUNIT3"] == "Angstrom" and hdu.header["CD3_3"] == 1.25
            assert hdu.header["CD1_1"] == pytest.approx(-0.2 / 3600)
    # galaxy brighter at the centre; Halpha in emission at the systemic velocity
    centre = flux[:, SIZE[0] // 2, SIZE[1] // 2]
    assert np.median(centre) > 5 * np.median(flux[:, 1, 1])
    halpha = 6562.80 * (1 + row["systemic_velocity_kms"] / 299792.458)
    near = np.abs(cube.wavelength_aa - halpha) < 3
    assert np.max(centre[near]) > 1.5 * np.median(centre)


def test_noise_follows_stat_and_seed_reproduces_bytes(mock, tmp_path, analytic_ssp_store):
    root, row, files, bands, recipe, summary = mock
    _, again, *_ = write(tmp_path / "same", analytic_ssp_store)
    assert again["muse_cube"].read_bytes() == files["muse_cube"].read_bytes()
    for band in bands:
        assert again[f"{band}_sci"].read_bytes() == files[f"{band}_sci"].read_bytes()
    assert (tmp_path / "same" / "truth.fits").read_bytes() == (root / "truth.fits").read_bytes()

    _, other, *_ = write(tmp_path / "other", analytic_ssp_store, seed=12)
    with fits.open(files["muse_cube"]) as a, fits.open(other["muse_cube"]) as b:
        np.testing.assert_array_equal(a["STAT"].data, b["STAT"].data)  # noise model does not depend on the seed
        pull = (a["DATA"].data.astype(float) - b["DATA"].data) / np.sqrt(2 * a["STAT"].data.astype(float))
    assert np.std(pull) == pytest.approx(1.0, abs=0.02)


def test_files_written_in_slabs_spaxel_batches_and_strips_are_the_files_written_at_once(
    mock, tmp_path, analytic_ssp_store, monkeypatch
):
    """A PHANGS-size mock is written a few planes, spaxels and image rows at a time (bounded
    memory): seams between slabs of 7 planes (3681 = 7 x 525 + 6: a short last slab; the S/N
    map's medians then in bands of a row), batches of 37 spaxels (the forward model and the
    disc SFRs) and HST strips of 7 rows (290 = 7 x 41 + 3; the PSF reaches across strips)
    change no value, and the files pass astropy's verification."""
    from sfh_pipeline import mock as mock_module

    root, row, files, bands, recipe, summary = mock
    monkeypatch.setattr(mock_module, "CUBE_SLAB_VALUES", 7 * SIZE[0] * SIZE[1])
    monkeypatch.setattr(mock_module, "SPAXEL_BATCH", 37)
    monkeypatch.setattr(mock_module, "SFR_BATCH", 37)
    monkeypatch.setattr(mock_module, "HST_STRIP_ROWS", 7)
    _, sliced, *_ = write(tmp_path, analytic_ssp_store)
    with fits.open(files["muse_cube"]) as whole, fits.open(sliced["muse_cube"]) as parts:
        parts.verify("exception")
        assert [h.header.tostring() for h in whole] == [h.header.tostring() for h in parts]
        for name in ("DATA", "STAT"):
            np.testing.assert_allclose(parts[name].data, whole[name].data, rtol=1e-6, atol=0)
    for band in bands:
        for kind in ("sci", "wht"):
            with fits.open(files[f"{band}_{kind}"]) as whole, fits.open(sliced[f"{band}_{kind}"]) as parts:
                parts.verify("exception")
                assert whole[0].header.tostring() == parts[0].header.tostring()
                assert whole[0].data.shape == (5 * SIZE[0] + 50, 5 * SIZE[1] + 50)
                np.testing.assert_array_equal(parts[0].data, whole[0].data, err_msg=f"{band} {kind}")
    assert not list((tmp_path / "muse").glob("tmp*")), "the spectra's temporary file was left behind"
    with fits.open(root / "truth.fits") as whole, fits.open(tmp_path / "truth.fits") as parts:
        for hdu in whole[1:]:
            np.testing.assert_array_equal(parts[hdu.name].data, hdu.data, err_msg=hdu.name)


def test_hst_images_read_with_units_and_coverage(mock):
    root, row, files, bands, recipe, summary = mock
    throughputs = load_throughputs(bands)
    for band in bands:
        image = HstImage.read(band, files[f"{band}_sci"], files[f"{band}_wht"])
        assert image.flux.shape == (5 * SIZE[0] + 50, 5 * SIZE[1] + 50)
        assert image.pivot_aa == pytest.approx(throughputs[band].pivot_wavelength_aa)
        with fits.open(files[f"{band}_sci"]) as hdul:
            header = hdul[0].header
            assert header["BUNIT"] == "ELECTRONS/S"
            assert header["CD1_1"] * 3600 == pytest.approx(-0.04)
            assert header["PHOTFNU"] == pytest.approx(
                header["PHOTFLAM"] * header["PHOTPLAM"] ** 2 / 2.99792458e18 * 1e23
            )
        # 0.04" pixels; the MUSE field sits 25 pixels inside, spaxel (0, 0) on HST pixels 25-29
        assert image.wcs.wcs.crval[0] != row["ra_deg"]
        muse = MuseCube.open(files["muse_cube"]).wcs
        world = muse.pixel_to_world_values([0, SIZE[1] - 1], [0, SIZE[0] - 1])
        x, y = image.wcs.world_to_pixel_values(*world)
        np.testing.assert_allclose(x, [27, 27 + 5 * (SIZE[1] - 1)], atol=1e-3)
        np.testing.assert_allclose(y, [27, 27 + 5 * (SIZE[0] - 1)], atol=1e-3)
        no_data = np.isnan(image.flux)
        if band == UNCOVERED:
            assert no_data.mean() == pytest.approx(0.25, abs=0.01)
            assert no_data[-1, -1] and not no_data[0, 0]
            continue
        assert not no_data.any()
        # flux conservation: the image's total equals the sum of the per-spaxel band fluxes
        total = summary["band_flux_total_cgs"][band]
        assert np.sum(image.flux) == pytest.approx(total, rel=0.03), band


def test_truth_maps(mock):
    root, row, files, bands, recipe, summary = mock
    images, wcs, edges, header = read_maps(root / "truth.fits")
    assert set(images) == set(MAP_HDUS)
    assert header["MODEL"] == "truth" and header["GALAXY"] == "MOCK-ACS"
    assert header["DIST_MPC"] == pytest.approx(row["distance_mpc"])
    np.testing.assert_allclose(edges, DEFAULT_AGE_BIN_EDGES_YR)
    inside = images["BIN_ID"] >= 0
    assert 0.5 < inside.mean() < 1.0  # the truncated disc leaves dark corners
    assert summary["n_galaxy_spaxels"] == inside.sum()
    np.testing.assert_array_equal(images["BIN_ID"][inside], np.flatnonzero(inside.ravel()))
    np.testing.assert_allclose(np.sum(images["SFH"][:, inside], axis=0), 1.0, atol=1e-5)
    assert np.all(np.isnan(images["LW_AGE"][~inside]))
    for quantity in PRODUCTS:
        image = images[quantity.name]
        assert image.shape == map_planes(quantity.name, edges.size - 1) + inside.shape, quantity.name
        if quantity.truth == "computed":
            # per-plane ones may be NaN (ZH of an age bin without mass)
            assert quantity.planes or np.all(np.isfinite(image[inside])), quantity.name
        elif quantity.truth == "zero":
            assert np.all(image[..., inside] == 0), quantity.name
        else:
            assert np.all(np.isnan(image)), quantity.name
        if quantity.name != "BIN_ID":
            assert np.all(np.isnan(image[..., ~inside])), quantity.name
    # S/N: ~snr_center at the brightest spaxel, a few at the faint end
    snr = images["SNR"][inside]
    assert snr.max() == pytest.approx(60, rel=0.02) and 2 < np.percentile(snr, 10) < 5

    structure = galaxy_structure(row, recipe)
    radius = structure["radius"][inside]
    assert np.corrcoef(radius, images["MW_LOGZ"][inside])[0, 1] < -0.8
    assert np.corrcoef(radius, images["LW_LOGZ"][inside])[0, 1] < -0.8
    assert np.polyfit(radius, images["MW_LOGZ"][inside], 1)[0] < 0
    bulge = inside & (structure["radius"] < 0.15)
    arms = inside & (structure["arm"] > 0.5) & (structure["radius"] > 0.4)
    assert bulge.sum() >= 1 and arms.sum() >= 5
    for name in ("LW_AGE", "MW_AGE"):
        assert np.mean(images[name][bulge]) > np.mean(images[name][arms]) + 0.1, name
    # the arms hold the recent bursts: more of their mass formed in the last 100 Myr
    young = np.sum(images["SFH"][:6], axis=0)
    assert np.mean(young[arms]) > 2 * np.mean(young[bulge])
    # mass density falls outwards
    assert np.corrcoef(radius, images["MASS_DENSITY"][inside])[0, 1] < -0.8


def test_truth_formation_times_are_those_of_the_truth_sfh(mock):
    """T50 / T90 of every spaxel = formation_times of its true SFH planes with the age-bin
    edges of the truth (the training set's): half of the mass formed before T50, 90 % before
    T90 (star formation uniform in time inside an age bin), checked here by summing the planes."""
    from sfh_pipeline.priors import formation_times

    root, row, files, bands, recipe, summary = mock
    images, _, edges, _ = read_maps(root / "truth.fits")
    inside = images["BIN_ID"] >= 0
    sfh = images["SFH"][:, inside].T.astype(float)  # (n, 16), as stored (float32)
    times = formation_times(sfh, edges)
    np.testing.assert_allclose(images["T50"][inside], times[:, 0], atol=1e-5)
    np.testing.assert_allclose(images["T90"][inside], times[:, 1], atol=1e-5)
    assert np.all(np.isnan(images["T50"][~inside])) and np.all(np.isnan(images["T90"][~inside]))
    # by hand: the mass formed at lookback > T is the planes older than T plus the part of
    # T's own plane that lies beyond T
    for j, fraction in enumerate((0.5, 0.9)):
        t = 10.0 ** images[("T50", "T90")[j]][inside]
        beyond = np.clip((edges[1:][None, :] - t[:, None]) / np.diff(edges)[None, :], 0.0, 1.0)
        np.testing.assert_allclose(np.sum(sfh * beyond, axis=1) / sfh.sum(1), fraction, atol=2e-4)
    assert np.all(images["T50"][inside] >= images["T90"][inside])
    # the bulge formed its stars earlier than the arms
    structure = galaxy_structure(row, recipe)
    bulge = inside & (structure["radius"] < 0.15)
    arms = inside & (structure["arm"] > 0.5) & (structure["radius"] > 0.4)
    assert np.mean(images["T90"][bulge]) > np.mean(images["T90"][arms]) + 0.1


def test_bad_recipe(tmp_path, analytic_ssp_store):
    with pytest.raises(ValueError, match="bulge_radius"):
        write(tmp_path, analytic_ssp_store, bulge_radius=0.3)
    with pytest.raises(ValueError, match="uncovered_band 'wfc3-uvis_f438w'"):
        write(tmp_path, analytic_ssp_store, uncovered_band="wfc3-uvis_f438w")
    assert not any(tmp_path.rglob("*.fits"))
