"""The maps file: layout, painting, and mosaics of several pointings."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from sfh_pipeline.maps import mosaic_maps, paint
from sfh_pipeline.products import LATER_HDUS, MAP_HDUS, PRODUCTS, SUMMARY_KEYS, map_planes, read_maps, write_maps

EDGES = np.array([0, 5e6, 1e7, 2e7, 4e7, 7e7, 1e8, 2e8, 4e8, 7e8, 1e9, 2e9, 3.5e9, 5e9, 8e9, 1.1e10, 1.4e10])


def grid_wcs(crpix=(1.0, 1.0)):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = list(crpix)
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    return wcs


def maps_of(bin_id, values):
    """Maps whose every quantity is ``values`` of the bin (one plane per age bin: 16 equal
    planes of values / 16; one per summary: 4 planes of values / 100)."""
    per_plane = {
        "": values,
        "age_bins": np.repeat(values[:, None], 16, axis=1) / 16,
        "summaries": np.repeat(values[:, None], 4, axis=1) / 100,
    }
    images = {quantity.name: paint(bin_id, per_plane[quantity.planes]) for quantity in PRODUCTS}
    images["BIN_ID"] = bin_id
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


def test_every_quantity_roundtrips_with_its_own_values_dtype_unit_and_comment(tmp_path):
    """Each HDU holds its own values (distinct per quantity, bin and plane), in the order,
    dtype, BUNIT and COMMENT of its entry in PRODUCTS; a plane HDU of the wrong shape is
    refused."""
    from astropy.io import fits

    bin_id = np.array([[0, 0, 1], [-1, 2, 1]])
    per_bin = {}
    for i, quantity in enumerate(PRODUCTS):
        planes = map_planes(quantity.name, 16)
        values = i + 0.01 * np.arange(3.0)[:, None] + 0.0001 * np.arange(planes[0] if planes else 1)[None, :]
        per_bin[quantity.name] = values if planes else values[:, 0]
    images = {name: paint(bin_id, values) for name, values in per_bin.items()}
    images["BIN_ID"] = bin_id
    del per_bin["BIN_ID"]
    write_maps(tmp_path / "m.fits", images, grid_wcs(), EDGES, {"GALAXY": "X"})
    back, _, _, _ = read_maps(tmp_path / "m.fits")
    inside = bin_id >= 0
    for name, values in per_bin.items():
        expected = values[bin_id[inside]].T.astype(np.float32)
        np.testing.assert_array_equal(back[name][..., inside], expected, err_msg=name)
        assert np.all(np.isnan(back[name][..., ~inside])), name
        assert back[name].shape == map_planes(name, 16) + bin_id.shape, name
    with fits.open(tmp_path / "m.fits") as hdul:
        assert [hdu.name for hdu in hdul[1:]] == [quantity.name for quantity in PRODUCTS]
        for quantity in PRODUCTS:
            hdu = hdul[quantity.name]
            assert hdu.data.dtype.name == quantity.dtype and hdu.header["BUNIT"] == quantity.unit, quantity.name
            # a long COMMENT spans cards, and FITS drops the blanks that end one
            assert "".join("".join(hdu.header["COMMENT"]).split()) == "".join(quantity.comment.split())
    # a plane HDU of the wrong shape is refused
    images["SFH_ERR"] = images["T50"]
    with pytest.raises(ValueError, match="SFH_ERR has shape"):
        write_maps(tmp_path / "bad.fits", images, grid_wcs(), EDGES, {})


def test_epistemic_planes_hold_each_summary_s_spread_in_order(tmp_path):
    """EPISTEMIC has one plane per summary, in the order of SUMMARY_HDUS, named in its header;
    each bin's four values land on its spaxels, plane by plane; a 2-D image is refused."""
    from astropy.io import fits

    from sfh_pipeline.products import SUMMARY_HDUS

    bin_id = np.array([[0, 0, 1], [-1, 2, 1]])
    images = maps_of(bin_id, np.array([5.0, 6.0, 7.0]))
    spread = np.array([[0.01, 0.02, 0.03, 0.04], [0.11, 0.12, 0.13, 0.14], [0.21, 0.22, 0.23, 0.24]])
    images["EPISTEMIC"] = paint(bin_id, spread)
    write_maps(tmp_path / "m.fits", images, grid_wcs(), EDGES, {})
    back, _, _, _ = read_maps(tmp_path / "m.fits")
    assert back["EPISTEMIC"].shape == (4, 2, 3)
    np.testing.assert_array_equal(back["EPISTEMIC"][:, 1, 1], spread[2].astype(np.float32))  # bin 2, plane by plane
    np.testing.assert_array_equal(back["EPISTEMIC"][2, 0, :2], np.float32([0.03, 0.03]))  # bin 0, LW_LOGZ
    assert np.all(np.isnan(back["EPISTEMIC"][:, 1, 0]))
    with fits.open(tmp_path / "m.fits") as hdul:
        header = hdul["EPISTEMIC"].header
        assert [header[f"PLANE{i}"] for i in range(1, 5)] == list(SUMMARY_HDUS) and header["BUNIT"] == "dex"
    images["EPISTEMIC"] = images["LW_AGE"]
    with pytest.raises(ValueError, match="EPISTEMIC has shape"):
        write_maps(tmp_path / "bad.fits", images, grid_wcs(), EDGES, {})


def test_a_maps_file_written_before_the_new_planes_reads_with_nan(tmp_path):
    """A maps file without the quantities added later (OOD, SFH_ERR, ZH_ERR, T50, T90, their
    _ERR and EPISTEMIC, as written before they existed) still reads: those are NaN of the right
    shape, everything else as stored."""
    from astropy.io import fits

    bin_id = np.array([[0, 0, 1], [-1, 2, 1]])
    write_maps(tmp_path / "new.fits", maps_of(bin_id, np.array([5.0, 6.0, 7.0])), grid_wcs(), EDGES, {"GALAXY": "X"})
    with fits.open(tmp_path / "new.fits") as hdul:
        fits.HDUList([h for h in hdul if h.name not in LATER_HDUS]).writeto(tmp_path / "old.fits")
    with fits.open(tmp_path / "old.fits") as hdul:
        assert not set(LATER_HDUS) & {h.name for h in hdul}
    old, _, edges, _ = read_maps(tmp_path / "old.fits")
    new, _, _, _ = read_maps(tmp_path / "new.fits")
    assert set(old) == set(MAP_HDUS)
    for name in MAP_HDUS:
        if name in LATER_HDUS:
            assert old[name].shape == new[name].shape and np.all(np.isnan(old[name])), name
        else:
            np.testing.assert_array_equal(old[name], new[name], err_msg=name)
    assert {name: old[name].shape for name in LATER_HDUS} == {
        name: map_planes(name, 16) + (2, 3) for name in LATER_HDUS
    }
    # and such a file goes through everything that reads maps: a mosaic of it and the quick-look
    from sfh_pipeline.atlas import quicklook

    mosaic_maps([tmp_path / "old.fits"], tmp_path / "mosaic.fits", "X")
    assert np.all(np.isnan(read_maps(tmp_path / "mosaic.fits")[0]["T50"]))
    quicklook(tmp_path / "old.fits", tmp_path / "old.png")
    assert (tmp_path / "old.png").stat().st_size > 10_000


def later_values(v, i, planes):
    """Values of the i-th quantity added later for bin values ``v``: shaped as ``v``, or with
    the planes last."""
    return v + i if not planes else v[..., None] + i + 0.01 * np.arange(planes[0])


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
        images = maps_of(local, unique.astype(float))
        # the quantities added later, each its own function of the bin's value (and of the plane)
        for i, later in enumerate(LATER_HDUS):
            images[later] = paint(local, later_values(unique.astype(float), i, map_planes(later, 16)))
        write_maps(
            tmp_path / f"{name}.fits", images, grid_wcs((1.0 - x0, 1.0)), EDGES, {"GALAXY": f"P{name}", "MODEL": "demo"}
        )
    summary = mosaic_maps([tmp_path / "a.fits", tmp_path / "b.fits"], tmp_path / "m.fits", "GAL")
    images, wcs, edges, header = read_maps(tmp_path / "m.fits")
    assert header["GALAXY"] == "GAL" and header["NPOINT"] == 2 and header["MODEL"] == "demo"
    # locate the truth grid in the mosaic through the WCS
    ra, dec = grid_wcs().pixel_to_world_values(xx, yy)
    mx, my = (np.round(v).astype(int) for v in wcs.world_to_pixel_values(ra, dec))
    np.testing.assert_array_equal(images["LW_AGE"][my, mx], value)
    np.testing.assert_array_equal(images["SFH"][:, my, mx].sum(0), value)
    # the quantities added later come along, plane by plane
    for i, name in enumerate(LATER_HDUS):
        got, expected = images[name][..., my, mx], later_values(value, i, map_planes(name, 16))
        expected = np.moveaxis(expected, -1, 0) if got.ndim == 3 else expected
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=name)
    ids = images["BIN_ID"][my, mx]
    assert (ids >= 0).all()
    # one id per original bin, values consistent with ids everywhere
    for original in np.unique(full_ids):
        assert np.unique(ids[full_ids == original]).size == 1
    # The field holds 12 x 10 = 120 bins: each pointing has 72, and the 24 bins of b inside the
    # overlap lie wholly under a's bins (a wins there), so they are not in the mosaic. The count
    # is of bins one can see, and the ids are 0..n-1 as in every maps file (atlas and
    # compare_with_truth count bins as BIN_ID.max() + 1).
    assert np.unique(ids).size == 120
    assert summary["n_bins"] == 120
    assert np.array_equal(np.unique(images["BIN_ID"][images["BIN_ID"] >= 0]), np.arange(120))


def test_maps_stage_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom sfh_pipeline.maps import assemble_maps\nfrom sfh_pipeline.products import read_tile_tables\n"
        "from sfh_pipeline.atlas import quicklook, sample_atlas\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # seconds of start-up per maps job otherwise


def test_mosaic_who_wins_where_pointings_overlap(tmp_path):
    """Every branch of the overlap rule, on a 6 x 10 field of one-spaxel bins whose values
    say which pointing they came from (a: 1000 + spaxel, b: 2000 + spaxel):

    * both pointings bin the spaxel: the first one (a) wins;
    * a covers it but left it unbinned (-1): b, which binned it, fills it;
    * only b covers it: b;
    * b covers it alone and did not bin it: no bin (-1) and NaN in every map.

    Bin ids of different pointings never collide, and the mosaic counts every binned spaxel
    of the field once (59 = 60 spaxels minus the one nobody binned).
    """
    ny, nx = 6, 10
    yy, xx = np.mgrid[:ny, :nx]
    spaxel = yy * nx + xx
    # a: columns 0-5, its column 5 unbinned in rows 0-2; b: columns 4-9, spaxel (5, 9) unbinned
    a_binned = np.ones((ny, 6), bool)
    a_binned[0:3, 5] = False
    b_binned = np.ones((ny, 6), bool)
    b_binned[5, 5] = False
    for name, x0, binned, tag in (("a", 0, a_binned, 1000.0), ("b", 4, b_binned, 2000.0)):
        ids = np.where(binned, np.cumsum(binned.ravel()).reshape(binned.shape) - 1, -1)
        values = np.zeros(int(ids.max()) + 1)
        values[ids[binned]] = tag + spaxel[:, x0 : x0 + 6][binned]
        write_maps(tmp_path / f"{name}.fits", maps_of(ids, values), grid_wcs((1.0 - x0, 1.0)), EDGES, {"GALAXY": name})
    summary = mosaic_maps([tmp_path / "a.fits", tmp_path / "b.fits"], tmp_path / "m.fits", "GAL")
    images, wcs, _, _ = read_maps(tmp_path / "m.fits")
    ra, dec = grid_wcs().pixel_to_world_values(xx, yy)
    mx, my = (np.round(v).astype(int) for v in wcs.world_to_pixel_values(ra, dec))
    value, ids = images["LW_AGE"][my, mx], images["BIN_ID"][my, mx]

    both = (xx >= 4) & (xx <= 5) & ~((xx == 5) & (yy <= 2))
    a_unbinned = (xx == 5) & (yy <= 2)
    only_a, only_b = xx <= 3, xx >= 6
    nobody = (yy == 5) & (xx == 9)
    np.testing.assert_array_equal(value[both], 1000 + spaxel[both])
    np.testing.assert_array_equal(value[a_unbinned], 2000 + spaxel[a_unbinned])
    np.testing.assert_array_equal(value[only_a], 1000 + spaxel[only_a])
    np.testing.assert_array_equal(value[only_b & ~nobody], 2000 + spaxel[only_b & ~nobody])
    assert ids[nobody] == -1 and np.isnan(value[nobody]) and np.all(np.isnan(images["SFH"][:, my, mx][:, nobody]))
    # the other maps follow the same winner (SFH planes hold value / 16 each)
    np.testing.assert_allclose(images["SFH"][:, my, mx].sum(0)[~nobody], value[~nobody], rtol=1e-6)
    np.testing.assert_array_equal(images["MASS_DENSITY"][my, mx][~nobody], value[~nobody])
    # one-spaxel bins: distinct ids = binned spaxels, so ids of a and b did not collide
    assert np.unique(ids[~nobody]).size == (~nobody).sum() == 59
    assert summary["n_bins"] == 59 and images["BIN_ID"].max() + 1 == 59
    # nothing outside the field got a bin
    assert (images["BIN_ID"] >= 0).sum() == 59


# ---------------------------------------------------------------- compare_with_truth

TRUTH_SHAPE = (6, 8)
#: galaxy centre (pixel x, y of the grid), face-on: the deprojected radius is the sky distance
CENTRE_PIX = (2.3, 3.6)
SLOPE_MW_LOGZ = -0.2  # dex per arcsec, the truth's metallicity gradient


def truth_row():
    ra, dec = grid_wcs().pixel_to_world_values(*CENTRE_PIX)
    return {"ra_deg": float(ra), "dec_deg": float(dec), "inclination_deg": 0.0, "position_angle_deg": 0.0}


@pytest.fixture(scope="module")
def truth_case(tmp_path_factory):
    """A truth file (spaxel-level, as the mock writes it), a bins file with 2 x 2-spaxel bins
    and the bins' true values computed here by hand with the weights the contract names:
    SIGNAL for light-weighted, 10**MASS_DENSITY for mass-weighted quantities. The values vary
    inside each bin and the weights are uneven, so an unweighted mean would be off."""
    from astropy.coordinates import SkyCoord
    from astropy.io import fits

    root = tmp_path_factory.mktemp("truth")
    ny, nx = TRUTH_SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    bins = (yy // 2) * (nx // 2) + xx // 2  # 12 bins of 2 x 2
    n_bins = int(bins.max()) + 1
    signal = 1.0 + 3.0 * ((yy + 2 * xx) % 3)  # 1, 4, 7: uneven light inside every bin
    log_mass = 7.0 + 0.5 * ((2 * yy + xx) % 3)
    wcs = grid_wcs()
    ra, dec = wcs.pixel_to_world_values(xx, yy)
    row = truth_row()
    radius = SkyCoord(ra, dec, unit="deg").separation(SkyCoord(row["ra_deg"], row["dec_deg"], unit="deg")).arcsec
    r_bin = np.array([radius[bins == b].mean() for b in range(n_bins)])
    spaxel = {
        "LW_AGE": 8.0 + 0.1 * bins + 0.03 * (xx % 2) + 0.02 * (yy % 2),
        "MW_AGE": 9.0 + 0.07 * bins - 0.04 * (xx % 2) + 0.05 * (yy % 2),
        "LW_LOGZ": -0.5 + 0.04 * bins + 0.01 * (xx % 2),
        # constant in each bin and linear in the bin's mean radius: the gradient is SLOPE_MW_LOGZ exactly
        "MW_LOGZ": 0.2 + SLOPE_MW_LOGZ * r_bin[bins],
    }

    def stored(a):  # maps and bins files hold float32
        return a.astype(np.float32).astype(float)

    true_bin = {}
    for key, image in spaxel.items():
        weight = stored(signal) if key.startswith("LW") else 10.0 ** stored(log_mass)
        image32 = stored(image)
        true_bin[key] = np.array(
            [np.sum((weight * image32)[bins == b]) / np.sum(weight[bins == b]) for b in range(n_bins)]
        )
    fill = {"computed": 0.0, "zero": 0.0, "nan": np.nan}
    truth = {q.name: np.full(map_planes(q.name, 16) + (ny, nx), fill[q.truth]) for q in PRODUCTS}
    truth.update(spaxel)
    truth.update(BIN_ID=(yy * nx + xx).astype(np.int32), MASS_DENSITY=log_mass, SFH=np.full((16, ny, nx), 1 / 16))
    write_maps(root / "truth.fits", truth, wcs, EDGES, {"GALAXY": "T", "MODEL": "truth"})
    header = wcs.to_header()
    hdus = [fits.PrimaryHDU()] + [
        fits.ImageHDU(data.astype(dtype), header=header, name=name)
        for name, data, dtype in (
            ("BIN_ID", bins, np.int32),
            ("SNR", np.full((ny, nx), 20.0), np.float32),
            ("SIGNAL", signal, np.float32),
            ("NOISE", np.ones((ny, nx)), np.float32),
        )
    ]
    hdus.append(
        fits.BinTableHDU.from_columns(
            [fits.Column("BIN_ID", "J", array=np.arange(n_bins)), fits.Column("SNR", "E", array=np.full(n_bins, 20.0))],
            name="BINS",
        )
    )
    fits.HDUList(hdus).writeto(root / "bins.fits")
    return root, bins, true_bin


def recovered_maps(path, bins, per_bin):
    """A maps file painting ``per_bin`` values (dict of the four summaries) on ``bins``."""
    values = np.zeros(int(bins.max()) + 1)
    images = maps_of(bins, values)
    for key, v in per_bin.items():
        images[key] = paint(bins, v)
    write_maps(path, images, grid_wcs(), EDGES, {"GALAXY": "T"})
    return path


def test_compare_identical_maps_is_a_perfect_score(truth_case, tmp_path):
    from sfh_pipeline.maps import compare_with_truth

    root, bins, true_bin = truth_case
    maps = recovered_maps(tmp_path / "maps.fits", bins, true_bin)
    result = compare_with_truth(maps, root / "truth.fits", root / "bins.fits", truth_row())
    assert result["n_bins"] == 12
    for key in SUMMARY_KEYS:
        assert result[key]["n"] == 12
        assert result[key]["spearman_rho"] == pytest.approx(1.0, abs=1e-12), key
        assert result[key]["median_abs_dex"] < 1e-6, key  # float32 storage only
        assert abs(result[key]["bias_dex"]) < 1e-6, key
    assert result["mw_logz"]["gradient_true_dex_per_arcsec"] == pytest.approx(SLOPE_MW_LOGZ, rel=1e-4)
    assert result["mw_logz"]["gradient_recovered_dex_per_arcsec"] == pytest.approx(SLOPE_MW_LOGZ, rel=1e-4)


def test_compare_reports_a_constant_offset_as_exactly_that_bias(truth_case, tmp_path):
    """+0.25 dex on every bin's LW age, -0.1 dex on MW log Z: bias and median |delta| are those
    numbers, the ranking (rho = 1) and the gradient are untouched, the other quantities stay perfect."""
    from sfh_pipeline.maps import compare_with_truth

    root, bins, true_bin = truth_case
    shifted = {**true_bin, "LW_AGE": true_bin["LW_AGE"] + 0.25, "MW_LOGZ": true_bin["MW_LOGZ"] - 0.1}
    maps = recovered_maps(tmp_path / "maps.fits", bins, shifted)
    result = compare_with_truth(maps, root / "truth.fits", root / "bins.fits", truth_row())
    assert result["lw_age"]["bias_dex"] == pytest.approx(0.25, abs=1e-5)
    assert result["lw_age"]["median_abs_dex"] == pytest.approx(0.25, abs=1e-5)
    assert result["mw_logz"]["bias_dex"] == pytest.approx(-0.1, abs=1e-5)
    assert result["mw_logz"]["median_abs_dex"] == pytest.approx(0.1, abs=1e-5)
    assert result["lw_age"]["spearman_rho"] == pytest.approx(1.0) and result["mw_logz"][
        "spearman_rho"
    ] == pytest.approx(1.0)
    assert result["mw_logz"]["gradient_recovered_dex_per_arcsec"] == pytest.approx(SLOPE_MW_LOGZ, rel=1e-4)
    assert abs(result["mw_age"]["bias_dex"]) < 1e-6 and abs(result["lw_logz"]["bias_dex"]) < 1e-6


def test_compare_sees_a_scrambled_map(truth_case, tmp_path):
    """Bins given the true values in reversed rank order: Spearman rho is exactly -1; a seeded
    shuffle gives the rho scipy computes for that permutation, far from 1."""
    from scipy import stats

    from sfh_pipeline.maps import compare_with_truth

    root, bins, true_bin = truth_case
    reversed_rank = {}
    for key, v in true_bin.items():
        order = np.argsort(v)
        out = np.empty_like(v)
        out[order] = v[order[::-1]]
        reversed_rank[key] = out
    result = compare_with_truth(
        recovered_maps(tmp_path / "rev.fits", bins, reversed_rank), root / "truth.fits", root / "bins.fits", truth_row()
    )
    for key in SUMMARY_KEYS:
        assert result[key]["spearman_rho"] == pytest.approx(-1.0, abs=1e-12), key
        assert result[key]["median_abs_dex"] > 0.05, key

    perm = np.random.default_rng(3).permutation(12)
    shuffled = {key: v[perm] for key, v in true_bin.items()}
    result = compare_with_truth(
        recovered_maps(tmp_path / "shuf.fits", bins, shuffled), root / "truth.fits", root / "bins.fits", truth_row()
    )
    for key in ("lw_age", "mw_age"):
        expected = stats.spearmanr(true_bin[key.upper()][perm], true_bin[key.upper()]).statistic
        assert expected < 0.7
        assert result[key]["spearman_rho"] == pytest.approx(expected, abs=1e-9), key


def test_compare_mass_density_and_coarse_sfh(truth_case, tmp_path):
    """The bin's mean surface density (log of the mean of 10**MASS_DENSITY) 0.3 dex too high
    comes back as exactly that bias; all mass put in the oldest plane against a flat true SFH
    (1/16 per plane) gives per coarse range the bias (recovered - true fraction) counted here."""
    from sfh_pipeline.maps import COARSE_SFH_EDGES_YR, compare_with_truth

    root, bins, true_bin = truth_case
    truth, _, _, _ = read_maps(root / "truth.fits")
    n_bins = int(bins.max()) + 1
    mean_density = np.array([np.log10(np.mean(10.0 ** truth["MASS_DENSITY"][bins == b])) for b in range(n_bins)])
    images = maps_of(bins, np.zeros(n_bins))
    for key, v in true_bin.items():
        images[key] = paint(bins, v)
    images["MASS_DENSITY"] = paint(bins, mean_density + 0.3)
    oldest = np.zeros((n_bins, 16))
    oldest[:, -1] = 1.0
    images["SFH"] = paint(bins, oldest)
    write_maps(tmp_path / "maps.fits", images, grid_wcs(), EDGES, {"GALAXY": "T"})
    result = compare_with_truth(tmp_path / "maps.fits", root / "truth.fits", root / "bins.fits", truth_row())
    assert result["mass_density"]["bias_dex"] == pytest.approx(0.3, abs=1e-5)
    assert result["mass_density"]["spearman_rho"] == pytest.approx(1.0)
    coarse = result["sfh_coarse"]
    assert [entry["age_min_yr"] for entry in coarse] == list(COARSE_SFH_EDGES_YR[:-1])
    for entry in coarse:
        planes = (EDGES[:-1] >= entry["age_min_yr"]) & (EDGES[1:] <= entry["age_max_yr"])
        true = planes.sum() / 16
        recovered = 1.0 if planes[-1] else 0.0
        assert entry["true_mean"] == pytest.approx(true, abs=1e-6)
        assert entry["bias"] == pytest.approx(recovered - true, abs=1e-6), entry


def test_assembled_mass_density_spreads_each_bins_mass_over_its_own_area(truth_case, tmp_path):
    """MASS_DENSITY = log10(bin stellar mass / (n spaxels x spaxel area in kpc^2)): bins of 4
    spaxels of 0.2" at 10 Mpc (0.0097 kpc a side) holding 10**8 M_sun each."""
    from sfh_pipeline.maps import assemble_maps, spaxel_area_kpc2
    from sfh_pipeline.products import SUMMARY_HDUS, write_tile_table

    root, bins, _ = truth_case
    n_bins = int(bins.max()) + 1
    columns = {
        "BIN_ID": np.arange(n_bins),
        "N_SPAXELS": np.bincount(bins.ravel()),
        "LOG_MSTAR": np.full(n_bins, 8.0),
        "CHI2": np.ones(n_bins),
        "OOD": np.full(n_bins, 0.5),
        "SFH": np.full((n_bins, 16), 1 / 16),
        "ZH": np.zeros((n_bins, 16)),
    }
    for key in SUMMARY_HDUS:
        columns[key], columns[f"{key}_ERR"] = np.full(n_bins, 9.0), np.full(n_bins, 0.1)
    write_tile_table(tmp_path / "tile.fits", columns, "y000x000", tmp_path / "model.pt", EDGES)
    (tmp_path / "model.pt").write_bytes(b"model")
    row = {"galaxy": "T", "distance_mpc": 10.0, "systemic_velocity_kms": 0.0, "ebv_galactic": 0.0}
    assemble_maps(root / "bins.fits", [tmp_path / "tile.fits"], row, tmp_path / "model.pt", tmp_path / "maps.fits")
    images, wcs, _, _ = read_maps(tmp_path / "maps.fits")
    side_kpc = 10.0e3 * np.radians(0.2 / 3600)  # the truth grid's 0.2" spaxels
    assert spaxel_area_kpc2(wcs, 10.0) == pytest.approx(side_kpc**2, rel=1e-4)
    np.testing.assert_allclose(images["MASS_DENSITY"], 8.0 - np.log10(4 * side_kpc**2), rtol=1e-5)


def test_compare_t50_t90_against_hand_computed_bins(truth_case, tmp_path):
    """Each truth spaxel formed all its stars either in the oldest age bin (11-14 Gyr) or in
    the youngest (0-5 Myr). A bin's true SFH is the mass-weighted mean (10**MASS_DENSITY) of
    its spaxels', so with F its old fraction and star formation uniform in time inside an age
    bin, the lookback time by which a fraction f had formed is, by hand,
    14 Gyr - f 3 Gyr / F if f <= F, else 5 Myr (1 - f) / (1 - F). F runs from 0.06 to 0.94
    over the bins (the unweighted mean would give 0.25 or 0.75), so T50 and T90 each fall in
    both age bins. Recovered T50 = truth + 0.1 dex, T90 = truth: bias 0.1 and 0, rho 1; a map
    without T50/T90 (NaN) gives n 0 and no statistics."""
    from sfh_pipeline.maps import compare_with_truth

    root, bins, true_bin = truth_case
    truth, wcs, edges, header = read_maps(root / "truth.fits")
    ny, nx = TRUTH_SHAPE
    yy, xx = np.mgrid[:ny, :nx]
    old = (yy * 3 + xx * 5) % 4 < 2
    sfh = np.zeros((16, ny, nx))
    sfh[-1][old] = 1.0
    sfh[0][~old] = 1.0
    truth["SFH"] = sfh
    write_maps(tmp_path / "truth.fits", truth, wcs, edges, {"GALAXY": "T", "MODEL": "truth"})

    n_bins = int(bins.max()) + 1
    mass = 10.0 ** truth["MASS_DENSITY"]
    F = np.array([mass[(bins == b) & old].sum() / mass[bins == b].sum() for b in range(n_bins)])
    assert F.min() < 0.1 and F.max() > 0.9 and ((F > 0.5) & (F < 0.9)).any()

    def lookback(f):
        return np.log10(np.where(f <= F, 1.4e10 - f * 3e9 / F, 5e6 * (1 - f) / (1 - F)))

    t50, t90 = lookback(0.5), lookback(0.9)
    images = maps_of(bins, np.zeros(n_bins))
    for key, v in true_bin.items():
        images[key] = paint(bins, v)
    images["T50"], images["T90"] = paint(bins, t50 + 0.1), paint(bins, t90)
    write_maps(tmp_path / "maps.fits", images, grid_wcs(), EDGES, {"GALAXY": "T"})
    result = compare_with_truth(tmp_path / "maps.fits", tmp_path / "truth.fits", root / "bins.fits", truth_row())
    assert result["t50"]["n"] == result["t90"]["n"] == n_bins
    assert result["t50"]["bias_dex"] == pytest.approx(0.1, abs=1e-5)
    assert result["t50"]["median_abs_dex"] == pytest.approx(0.1, abs=1e-5)
    assert result["t90"]["median_abs_dex"] < 1e-5 and abs(result["t90"]["bias_dex"]) < 1e-5
    assert result["t50"]["spearman_rho"] == pytest.approx(1.0) and result["t90"]["spearman_rho"] == pytest.approx(1.0)

    # recovered in reversed order (ties kept: bins share F): rho -1
    images["T50"] = paint(bins, 20.0 - t50)
    write_maps(tmp_path / "rev.fits", images, grid_wcs(), EDGES, {"GALAXY": "T"})
    result = compare_with_truth(tmp_path / "rev.fits", tmp_path / "truth.fits", root / "bins.fits", truth_row())
    assert result["t50"]["spearman_rho"] == pytest.approx(-1.0)

    images["T50"] = images["T90"] = np.full((ny, nx), np.nan)
    write_maps(tmp_path / "none.fits", images, grid_wcs(), EDGES, {"GALAXY": "T"})
    result = compare_with_truth(tmp_path / "none.fits", tmp_path / "truth.fits", root / "bins.fits", truth_row())
    assert result["t50"] == {"spearman_rho": None, "median_abs_dex": None, "bias_dex": None, "n": 0}


def write_tile(path, bins, extra=None, rows=None):
    """A tile table of the truth case's bins (or the bins ``rows``) with the columns every
    table has, plus ``extra`` columns."""
    from sfh_pipeline.products import SUMMARY_HDUS, write_tile_table

    n_bins = int(bins.max()) + 1
    rows = np.arange(n_bins) if rows is None else rows
    n = rows.size
    columns = {
        "BIN_ID": rows,
        "N_SPAXELS": np.bincount(bins.ravel())[rows],
        "LOG_MSTAR": np.full(n, 8.0),
        "CHI2": np.ones(n),
        "SFH": np.full((n, 16), 1 / 16),
        "ZH": np.zeros((n, 16)),
    }
    for key in SUMMARY_HDUS:
        columns[key], columns[f"{key}_ERR"] = np.full(n, 9.0), np.full(n, 0.1)
    columns.update(extra or {})
    write_tile_table(path, columns, "y000x000", path.parent / "model.pt", EDGES)
    return path


def test_assembled_maps_paint_the_new_columns_and_nan_for_tables_without_them(truth_case, tmp_path):
    """Two tile tables: one (bins 0-5) with the columns of the quantities added later (OOD,
    SFH_ERR, ZH_ERR, T50, T90 and their _ERR, EPISTEMIC), per bin and per plane distinct; one
    (bins 6-11) written before these columns existed. The maps hold the first's values on the
    spaxels of its bins, NaN on the others'."""
    from sfh_pipeline.maps import assemble_maps

    root, bins, _ = truth_case
    (tmp_path / "model.pt").write_bytes(b"model")
    first = np.arange(6)
    later = [quantity for quantity in PRODUCTS if quantity.later and quantity.column]
    extra = {
        quantity.column: later_values(0.5 + 0.1 * first, i, map_planes(quantity.name, 16))
        for i, quantity in enumerate(later)
    }
    tables = [
        write_tile(tmp_path / "new.fits", bins, extra, first),
        write_tile(tmp_path / "old.fits", bins, rows=np.arange(6, 12)),
    ]
    row = {"galaxy": "T", "distance_mpc": 10.0, "systemic_velocity_kms": 0.0, "ebv_galactic": 0.0}
    assemble_maps(root / "bins.fits", tables, row, tmp_path / "model.pt", tmp_path / "maps.fits")
    images, _, _, _ = read_maps(tmp_path / "maps.fits")
    for quantity in later:
        name, values = quantity.name, extra[quantity.column]
        for b in range(12):
            got = images[name][..., bins == b]  # (planes, 4) or (4,)
            if b < 6:
                expected = np.broadcast_to(np.asarray(values[b], np.float32)[..., None], got.shape)
                np.testing.assert_array_equal(got, expected, err_msg=f"{name} bin {b}")
            else:
                assert np.all(np.isnan(got)), (name, b)
    assert images["SFH_ERR"].shape == (16,) + TRUTH_SHAPE and images["T50"].shape == TRUTH_SHAPE
    # the columns every table has are painted for all bins
    assert np.all(images["LW_AGE"] == 9.0)


def test_expected_spearman_rho_against_simulated_gaussians():
    """The closed form against 20,000 simulated (truth, truth + error) pairs, and its limits."""
    from scipy import stats

    from sfh_pipeline.maps import expected_spearman_rho

    rng = np.random.default_rng(5)
    truth = rng.normal(9.7, 0.06, 20_000)
    for scatter in (0.01, 0.045, 0.06, 0.15):
        simulated = stats.spearmanr(truth, truth + rng.normal(0, scatter, truth.size)).statistic
        assert expected_spearman_rho(0.06, scatter) == pytest.approx(simulated, abs=0.015), scatter
    assert expected_spearman_rho(0.06, 0.0) == pytest.approx(1.0)
    assert expected_spearman_rho(1.0, 0.7149) == pytest.approx(0.8, abs=1e-3)
    assert np.isnan(expected_spearman_rho(0.0, 0.0))


def test_compare_reports_spread_and_scatter(truth_case, tmp_path):
    """A constant offset has no scatter (rho expected 1); seeded noise of 0.05 dex on MW age gives
    its scatter back within sampling error of 12 bins, and the truth's spread is its standard deviation."""
    from sfh_pipeline.maps import compare_with_truth

    root, bins, true_bin = truth_case
    noise = np.random.default_rng(0).normal(0, 0.05, 12)
    shifted = {**true_bin, "LW_AGE": true_bin["LW_AGE"] + 0.25, "MW_AGE": true_bin["MW_AGE"] + noise}
    result = compare_with_truth(
        recovered_maps(tmp_path / "maps.fits", bins, shifted), root / "truth.fits", root / "bins.fits", truth_row()
    )
    assert result["lw_age"]["scatter_dex"] < 1e-5 and result["lw_age"]["spearman_rho_expected"] == pytest.approx(1.0)
    assert result["mw_age"]["true_spread_dex"] == pytest.approx(np.std(true_bin["MW_AGE"]), rel=1e-4)
    delta = noise - np.median(noise)
    assert result["mw_age"]["scatter_dex"] == pytest.approx(1.4826 * np.median(np.abs(delta)), rel=1e-3)
    assert 0.02 < result["mw_age"]["scatter_dex"] < 0.1
