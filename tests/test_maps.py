"""The maps file: layout, painting, and mosaics of several pointings."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from sfh_pipeline.maps import MAP_HDUS, mosaic_maps, paint, read_maps, write_maps

EDGES = np.array([0, 5e6, 1e7, 2e7, 4e7, 7e7, 1e8, 2e8, 4e8, 7e8, 1e9, 2e9, 3.5e9, 5e9, 8e9, 1.1e10, 1.4e10])


def grid_wcs(crpix=(1.0, 1.0)):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return wcs


def maps_of(bin_id, values):
    """Maps whose every quantity is ``values`` of the bin (SFH and ZH: 16 equal planes)."""
    images = {name: paint(bin_id, values) for name in MAP_HDUS if name not in ("BIN_ID", "SFH", "ZH")}
    images["BIN_ID"] = bin_id
    planes = np.repeat(values[:, None], 16, axis=1) / 16
    images["SFH"] = images["ZH"] = paint(bin_id, planes)
    return images


def test_paint_and_roundtrip(tmp_path):
    bin_id = np.array([[0, 0, 1], [-1, 2, 1]])
    image = paint(bin_id, np.array([5.0, 6.0, 7.0]))
    np.testing.assert_array_equal(image, [[5, 5, 6], [np.nan, 7, 6]])
    write_maps(tmp_path / "m.fits", maps_of(bin_id, np.array([5.0, 6.0, 7.0])), grid_wcs(), EDGES, {"GALAXY": "X"})
    images, wcs, edges, header = read_maps(tmp_path / "m.fits")
    np.testing.assert_array_equal(edges, EDGES)
    assert header["GALAXY"] == "X" and images["SFH"].shape == (16, 2, 3) and images["BIN_ID"].dtype.kind == "i"
    with pytest.raises(ValueError, match="missing"):
        write_maps(tmp_path / "n.fits", {"BIN_ID": bin_id}, grid_wcs(), EDGES, {})
    assert not (tmp_path / "n.fits").exists()


def test_mosaic_of_two_overlapping_pointings(tmp_path):
    # the truth: a 12 x 20 field of 1 x 2-spaxel bins with value = bin id
    ny, nx = 12, 20
    yy, xx = np.mgrid[:ny, :nx]
    full_ids = yy * (nx // 2) + xx // 2
    value = full_ids.astype(float)
    # two pointings: columns 0-11 and 8-19 (overlap 8-11), each with its own bin numbering
    for name, x0, x1 in (("a", 0, 12), ("b", 8, 20)):
        ids = full_ids[:, x0:x1]
        unique, local = np.unique(ids, return_inverse=True)
        local = local.reshape(ids.shape)
        local[0, 0] = -1 if name == "b" else local[0, 0]  # an unbinned spaxel of b inside the overlap
        write_maps(tmp_path / f"{name}.fits", maps_of(local, unique.astype(float)), grid_wcs((1.0 - x0, 1.0)),
                   EDGES, {"GALAXY": f"P{name}", "MODEL": "demo"})
    summary = mosaic_maps([tmp_path / "a.fits", tmp_path / "b.fits"], tmp_path / "m.fits", "GAL")
    images, wcs, edges, header = read_maps(tmp_path / "m.fits")
    assert header["GALAXY"] == "GAL" and header["NPOINT"] == 2 and header["MODEL"] == "demo"
    # locate the truth grid in the mosaic through the WCS
    ra, dec = grid_wcs().pixel_to_world_values(xx, yy)
    mx, my = (np.round(v).astype(int) for v in wcs.world_to_pixel_values(ra, dec))
    np.testing.assert_array_equal(images["LW_AGE"][my, mx], value)
    np.testing.assert_array_equal(images["SFH"][:, my, mx].sum(0), value)
    ids = images["BIN_ID"][my, mx]
    assert (ids >= 0).all()
    # one id per original bin, values consistent with ids everywhere
    for original in np.unique(full_ids):
        assert np.unique(ids[full_ids == original]).size == 1
    assert summary["n_bins"] == 6 * 12 + 6 * 12


def test_maps_stage_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom sfh_pipeline.maps import assemble_maps\nfrom sfh_pipeline.infer import read_tile_tables\n"
            "from sfh_pipeline.atlas import quicklook, sample_atlas\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # seconds of start-up per maps job otherwise
