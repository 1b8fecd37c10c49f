"""Tiled extraction of binned spectra: bins crossing tile edges, exactness, NaN handling."""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline.extract import bin_geometry, extract_bin_spectra, sum_bins, tile_slices, wavelength_planes
from sfh_pipeline.phangs import MuseCube

from .support.phangs_files import write_cube


def blob_bins(shape, seed=3):
    """A bin map with compact bins of 1-30 spaxels (a nearest-generator tessellation), -1 in a hole."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    generators = rng.uniform([0, 0], [ny, nx], (25, 2))
    yy, xx = np.mgrid[:ny, :nx]
    d = (yy[..., None] - generators[:, 0]) ** 2 + (xx[..., None] - generators[:, 1]) ** 2
    nearest = d.argmin(-1)
    nearest[:3, :4] = -1
    # renumber by first spaxel so ids are contiguous
    ids, first = np.unique(nearest[nearest >= 0], return_index=True)
    order = ids[np.argsort(first)]
    lookup = np.full(25, -1)
    lookup[order] = np.arange(order.size)
    return np.where(nearest >= 0, lookup[np.clip(nearest, 0, None)], -1)


def test_tiled_extraction_equals_untiled(tmp_path):
    data = write_cube(tmp_path / "c.fits", shape=(30, 15, 20))
    data[5, 7, 9] = np.nan  # one bad pixel of one spaxel
    from astropy.io import fits

    with fits.open(tmp_path / "c.fits", mode="update") as hdul:
        hdul["DATA"].data[5, 7, 9] = np.nan
    cube = MuseCube.open(tmp_path / "c.fits")
    bin_id = blob_bins(cube.shape)
    whole = bin_geometry(bin_id, tile_size=100)
    all_bins = np.arange(int(bin_id.max()) + 1)
    flux_all, var_all = extract_bin_spectra(cube, bin_id, all_bins, whole)

    geometry = bin_geometry(bin_id, tile_size=6)
    tiles = tile_slices(cube.shape, 6)
    assert len(tiles) == 12
    crossing = [b for b in all_bins if len({t for t, (ys, xs) in tiles.items() if (bin_id[ys, xs] == b).any()}) > 1]
    assert len(crossing) > 5  # the test means something only if bins cross tile edges
    flux_tiled = np.full_like(flux_all, np.nan)
    var_tiled = np.full_like(var_all, np.nan)
    seen = []
    for tile in tiles:
        owned = geometry.owned_by(tile)
        seen += list(owned)
        flux_tiled[owned], var_tiled[owned] = extract_bin_spectra(cube, bin_id, owned, geometry)
    assert sorted(seen) == list(all_bins)  # every bin has exactly one owner
    np.testing.assert_array_equal(flux_tiled, flux_all)
    np.testing.assert_array_equal(var_tiled, var_all)

    # against a direct sum of the cube
    full = data.astype(np.float64) * 1e-20
    b = int(bin_id[10, 15])
    np.testing.assert_allclose(flux_all[b], full[:, bin_id == b].sum(1), rtol=1e-12)
    # the NaN pixel poisons that plane of its bin only
    nan_bin = int(bin_id[7, 9])
    assert np.isnan(flux_all[nan_bin, 5]) and np.isfinite(np.delete(flux_all[nan_bin], 5)).all()
    # the spaxel at (0, 0) is NaN in the cube but lies in the hole (-1), so no bin is touched by it
    assert np.isfinite(np.delete(flux_all, nan_bin, axis=0)).all()


def test_geometry_and_owner():
    bin_id = np.array([[0, 0, 1], [2, 0, 1], [-1, 2, 2]])
    g = bin_geometry(bin_id, tile_size=2)
    assert list(g.owner) == ["y000x000", "y000x001", "y000x000"]
    np.testing.assert_array_equal(g.box, [[0, 2, 0, 2], [0, 2, 2, 3], [1, 3, 0, 3]])
    np.testing.assert_array_equal(g.n_spaxels, [3, 2, 3])
    with pytest.raises(ValueError, match="not contiguous"):
        bin_geometry(np.array([[0, 2]]), 2)
    with pytest.raises(ValueError, match="does not contain"):
        sum_bins(bin_id, np.array([2]), np.ones((1, 2, 2)))


def test_wavelength_planes():
    wave = 4749.75 + 1.25 * np.arange(3681)
    planes = wavelength_planes(wave, (4800.0, 7000.0), (700.0, 1900.0))
    assert wave[planes][0] <= 4800 * np.exp(700 / 299792.458) - 10
    assert wave[planes][-1] >= 7000 * np.exp(1900 / 299792.458) + 10
    with pytest.raises(ValueError, match="does not cover"):
        wavelength_planes(wave, (4700.0, 7000.0), (-3000.0, 0.0))
