"""Continuum S/N maps from a small cube in the PHANGS-MUSE layout, and adaptive binning."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from sfh_pipeline.binning import BinningResult, continuum_snr, voronoi_bins
from sfh_pipeline.phangs import DataError, MuseCube

WAVE0, DWAVE = 4749.75, 1.25


def disc_snr_map(shape, *, sn_centre=100.0, sn_edge=1.0, holes=True, seed=0):
    """Exponential disc: S/N ~sn_centre at the centre falling to ~sn_edge at the map's edge,
    with masked (NaN) holes (foreground stars, bad regions) and 5 % scatter."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    r = np.hypot((x - nx / 2) / (nx / 2), (y - ny / 2) / (ny / 2))  # 1 at the mid-edges
    sn = sn_centre * (sn_edge / sn_centre) ** r
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.5, 2.0, shape)  # noise varies: not proportional to signal
    signal = sn * noise * (1 + 0.05 * rng.standard_normal(shape))
    if holes:
        for cy, cx, rad in ((0.3, 0.7, 0.06), (0.65, 0.25, 0.08), (0.5, 0.52, 0.03)):
            hole = np.hypot(y / ny - cy, x / nx - cx) < rad
            signal[hole] = np.nan
            noise[hole] = np.nan
    return signal, noise


def write_phangs_cube(path, shape=(60, 23, 29)):
    """A cube in the PHANGS-MUSE DR1 layout with a disc S/N profile, NaN planes and spaxels."""
    n_wave, ny, nx = shape
    signal, noise = disc_snr_map((ny, nx), sn_centre=60.0, sn_edge=0.8, seed=3)
    rng = np.random.default_rng(4)
    sig = np.nan_to_num(signal, nan=1.0)[None] * 100.0
    data = (sig * (1 + 0.02 * rng.standard_normal((n_wave, ny, nx)))).astype(np.float32)
    stat = ((np.nan_to_num(noise, nan=1.0)[None] * 100.0) ** 2 * rng.uniform(0.8, 1.2, (n_wave, ny, nx))).astype(
        np.float32
    )
    data[20:24] = np.nan  # laser-notch-like gap
    stat[20:24] = np.nan
    data[:, 0, 0] = stat[:, 0, 0] = np.nan  # outside the mosaic
    data[:, 5, 7] = -np.abs(data[:, 5, 7])  # negative continuum
    stat[:, 9, 3] = 0.0  # zero variance
    hdus = [fits.PrimaryHDU()]
    for name, values in (("DATA", data), ("STAT", stat)):
        hdu = fits.ImageHDU(values, name=name)
        h = hdu.header
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
        h["CRVAL1"], h["CRVAL2"] = 170.0625, 12.9915
        h["CRPIX1"], h["CRPIX2"] = 15.0, 12.0
        h["CD1_1"], h["CD2_2"] = -0.2 / 3600, 0.2 / 3600
        h["CD1_2"] = h["CD2_1"] = 0.0
        h["CTYPE3"], h["CUNIT3"] = "AWAV", "Angstrom"
        h["CRVAL3"], h["CD3_3"], h["CRPIX3"] = WAVE0, DWAVE, 1.0
        h["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)
    return data, stat


@pytest.fixture()
def cube_path(tmp_path):
    path = tmp_path / "NGC0628_PHANGS_DATACUBE_copt_0.92asec.fits"
    write_phangs_cube(path)
    return path


@pytest.mark.parametrize("tile_size", [5, 7, 23, 64])
def test_continuum_snr_matches_whole_array(cube_path, tile_size):
    window = (WAVE0 + 10 * DWAVE, WAVE0 + 40 * DWAVE)  # planes 10..40, across the NaN gap
    cube = MuseCube.open(cube_path)
    with fits.open(cube_path) as hdul:
        flux = hdul["DATA"].data[10:41].astype(np.float64) * cube.flux_scale
        var = hdul["STAT"].data[10:41].astype(np.float64) * cube.flux_scale**2
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="All-NaN"):
        expected_signal = np.nanmedian(flux, axis=0)
        expected_noise = np.sqrt(np.nanmedian(var, axis=0))
    bad = ~(expected_signal > 0) | ~(expected_noise > 0)
    expected_signal[bad] = expected_noise[bad] = np.nan

    signal, noise = continuum_snr(cube_path, window, tile_size=tile_size)
    np.testing.assert_array_equal(signal, expected_signal)
    np.testing.assert_array_equal(noise, expected_noise)
    assert np.isnan(signal[0, 0]) and np.isnan(signal[5, 7]) and np.isnan(noise[9, 3])
    assert np.isfinite(signal).sum() == signal.size - 3


def test_continuum_snr_reads_only_the_window(cube_path, monkeypatch):
    cube = MuseCube.open(cube_path)
    calls = []
    original = MuseCube.read_tile

    def spy(self, y, x, planes=slice(None)):
        calls.append((y, x, planes))
        return original(self, y, x, planes)

    monkeypatch.setattr(MuseCube, "read_tile", spy)
    continuum_snr(cube, (WAVE0 + 2 * DWAVE, WAVE0 + 5.5 * DWAVE), tile_size=10)
    assert len(calls) == 3 * 3
    assert all(c[2] == slice(2, 6) for c in calls)
    assert all(c[0].stop - c[0].start <= 10 and c[1].stop - c[1].start <= 10 for c in calls)


def test_continuum_snr_window_outside_cube(cube_path):
    with pytest.raises(DataError, match="holds no plane"):
        continuum_snr(cube_path, (9000.0, 9100.0))


def quadrature_snr(signal, noise, bin_id, n_bins):
    inside = bin_id >= 0
    s = np.bincount(bin_id[inside], weights=signal[inside], minlength=n_bins)
    v = np.bincount(bin_id[inside], weights=noise[inside] ** 2, minlength=n_bins)
    return s / np.sqrt(v)


@pytest.fixture(scope="module")
def disc():
    return disc_snr_map((90, 110))


@pytest.mark.parametrize("method", ["powerbin", "vorbin"])
def test_voronoi_bins_reach_target(disc, method):
    signal, noise = disc
    target, min_sn = 20.0, 2.0
    result = voronoi_bins(signal, noise, target, min_sn, method=method)
    assert isinstance(result, BinningResult) and result.method == method
    bin_id = result.bin_id
    assert bin_id.shape == signal.shape and bin_id.dtype == np.int32
    # masked: holes (NaN) and spaxels below min_sn; everything else binned
    with np.errstate(invalid="ignore"):
        sn = signal / noise
    masked = ~np.isfinite(sn) | (sn < min_sn)
    assert masked.any() and np.isnan(signal).any()
    np.testing.assert_array_equal(bin_id == -1, masked)
    # contiguous ids, numbered by the row-major position of each bin's first spaxel
    ids = bin_id[bin_id >= 0]
    assert set(np.unique(ids)) == set(range(result.n_bins))
    _, first = np.unique(bin_id.ravel(), return_index=True)
    assert np.all(np.diff(first[1:]) > 0)
    # bin S/N (quadrature sum of the spaxels) at the target
    snr = quadrature_snr(signal, noise, bin_id, result.n_bins)
    np.testing.assert_allclose(result.bin_snr, snr)
    npix = np.bincount(ids, minlength=result.n_bins)
    multi = npix > 1
    assert multi.sum() > 50
    within = np.abs(snr[multi] / target - 1) < 0.25
    assert within.mean() > 0.8, (within.mean(), np.percentile(snr[multi], [5, 50, 95]))
    # spaxels above the target are bins of their own
    above = ~masked & (np.nan_to_num(sn) >= target)
    assert above.sum() > 20
    assert np.all(npix[bin_id[above]] == 1)
    # deterministic
    again = voronoi_bins(signal, noise, target, min_sn, method=method)
    np.testing.assert_array_equal(again.bin_id, bin_id)
    np.testing.assert_array_equal(again.bin_snr, result.bin_snr)


@pytest.mark.parametrize("method", ["powerbin", "vorbin"])
def test_tiled_bins_never_cross_tile_edges(disc, method):
    signal, noise = disc
    tile = 32  # does not divide 90 x 110
    result = voronoi_bins(signal, noise, 20.0, 2.0, method=method, tile_size=tile)
    assert result.tile_size == tile
    bin_id = result.bin_id
    ids = bin_id[bin_id >= 0]
    assert set(np.unique(ids)) == set(range(result.n_bins))
    y, x = np.nonzero(bin_id >= 0)
    tile_of = (y // tile) * 1000 + x // tile
    for b in range(result.n_bins):
        assert np.unique(tile_of[bin_id[y, x] == b]).size == 1
    whole = voronoi_bins(signal, noise, 20.0, 2.0, method=method)
    np.testing.assert_array_equal(bin_id >= 0, whole.bin_id >= 0)
    # most bins still at the target; some edge left-overs below it
    multi = np.bincount(ids) > 1
    assert np.mean(np.abs(result.bin_snr[multi] / 20.0 - 1) < 0.25) > 0.7
    np.testing.assert_array_equal(voronoi_bins(signal, noise, 20.0, 2.0, method=method, tile_size=tile).bin_id, bin_id)


def test_auto_tiles_large_maps(monkeypatch, disc):
    import sfh_pipeline.binning as binning

    signal, noise = disc
    assert voronoi_bins(signal, noise, 20.0, 2.0).tile_size is None
    monkeypatch.setattr(binning, "AUTO_MAX_WHOLE", 1000)
    monkeypatch.setattr(binning, "AUTO_TILE_SIZE", 40)
    result = voronoi_bins(signal, noise, 20.0, 2.0)
    assert (result.method, result.tile_size) == ("powerbin", 40)


def test_nothing_above_min_sn_is_a_clear_error():
    signal = np.full((20, 30), 0.5)
    noise = np.ones((20, 30))
    signal[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"no spaxel .* S/N >= min_sn=3.*highest S/N: 0.5"):
        voronoi_bins(signal, noise, 30.0, 3.0)
    with pytest.raises(ValueError, match="highest S/N: none finite"):
        voronoi_bins(np.full((4, 4), np.nan), np.ones((4, 4)), 30.0, 3.0)


def test_small_and_degenerate_maps():
    signal = np.array([[50.0, 2.0, 2.0], [np.nan, 2.0, 60.0]])
    noise = np.ones_like(signal)
    result = voronoi_bins(signal, noise, 30.0, 1.0)
    # two single spaxels above target; the three faint ones cannot reach 30 together: one bin
    np.testing.assert_array_equal(result.bin_id, [[0, 1, 1], [-1, 1, 2]])
    np.testing.assert_allclose(result.bin_snr, [50.0, 6 / np.sqrt(3), 60.0])
    with pytest.raises(ValueError, match="one shape"):
        voronoi_bins(signal, noise[:1], 30.0)
    with pytest.raises(ValueError, match="method"):
        voronoi_bins(signal, noise, 30.0, method="voronoi")


@pytest.mark.parametrize("method", ["powerbin", "vorbin"])
def test_scattered_faint_spaxels_form_one_bin(method):
    """Far-apart spaxels reaching the target only all together (vorbin's accretion finds no bin)."""
    signal = np.full((30, 30), np.nan)
    noise = np.ones((30, 30))
    for y, x in ((2, 2), (2, 27), (27, 2), (27, 27)):
        signal[y, x] = 10.0
    result = voronoi_bins(signal, noise, 19.0, 1.0, method=method)
    # any three reach 30/sqrt(3) = 17.3 < 19, all four 40/2 = 20: exactly one bin of all four
    assert result.n_bins == 1
    np.testing.assert_array_equal(result.bin_id[np.isfinite(signal)], 0)
    assert np.all(result.bin_id[~np.isfinite(signal)] == -1)
    np.testing.assert_allclose(result.bin_snr, [20.0])
