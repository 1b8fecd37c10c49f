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

    code = ("import sys\nfrom sfh_pipeline.maps import assemble_maps\nfrom sfh_pipeline.infer import read_tile_tables\n"
            "from sfh_pipeline.atlas import quicklook, sample_atlas\nprint('torch' in sys.modules)")
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
        values[ids[binned]] = tag + spaxel[:, x0:x0 + 6][binned]
        write_maps(tmp_path / f"{name}.fits", maps_of(ids, values), grid_wcs((1.0 - x0, 1.0)), EDGES,
                   {"GALAXY": name})
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
        true_bin[key] = np.array([np.sum((weight * image32)[bins == b]) / np.sum(weight[bins == b])
                                  for b in range(n_bins)])
    truth = {name: np.zeros((ny, nx)) for name in MAP_HDUS if name not in ("SFH", "ZH")}
    truth.update(spaxel)
    truth.update(BIN_ID=(yy * nx + xx).astype(np.int32), MASS_DENSITY=log_mass, SFH=np.full((16, ny, nx), 1 / 16),
                 ZH=np.zeros((16, ny, nx)), CHI2=np.full((ny, nx), np.nan), OOD=np.full((ny, nx), np.nan))
    write_maps(root / "truth.fits", truth, wcs, EDGES, {"GALAXY": "T", "MODEL": "truth"})
    header = wcs.to_header()
    hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(data.astype(dtype), header=header, name=name) for name, data, dtype in (
        ("BIN_ID", bins, np.int32), ("SNR", np.full((ny, nx), 20.0), np.float32),
        ("SIGNAL", signal, np.float32), ("NOISE", np.ones((ny, nx)), np.float32))]
    hdus.append(fits.BinTableHDU.from_columns([fits.Column("BIN_ID", "J", array=np.arange(n_bins)),
                                               fits.Column("SNR", "E", array=np.full(n_bins, 20.0))], name="BINS"))
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
    for key in ("lw_age", "mw_age", "lw_logz", "mw_logz"):
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
    assert result["lw_age"]["spearman_rho"] == pytest.approx(1.0) and result["mw_logz"]["spearman_rho"] == pytest.approx(1.0)
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
    result = compare_with_truth(recovered_maps(tmp_path / "rev.fits", bins, reversed_rank), root / "truth.fits",
                                root / "bins.fits", truth_row())
    for key in ("lw_age", "mw_age", "lw_logz", "mw_logz"):
        assert result[key]["spearman_rho"] == pytest.approx(-1.0, abs=1e-12), key
        assert result[key]["median_abs_dex"] > 0.05, key

    perm = np.random.default_rng(3).permutation(12)
    shuffled = {key: v[perm] for key, v in true_bin.items()}
    result = compare_with_truth(recovered_maps(tmp_path / "shuf.fits", bins, shuffled), root / "truth.fits",
                                root / "bins.fits", truth_row())
    for key in ("lw_age", "mw_age"):
        expected = stats.spearmanr(true_bin[key.upper()][perm], true_bin[key.upper()]).statistic
        assert expected < 0.7
        assert result[key]["spearman_rho"] == pytest.approx(expected, abs=1e-9), key


def test_compare_mass_density_and_coarse_sfh(truth_case, tmp_path):
    """The bin's mean surface density (log of the mean of 10**MASS_DENSITY) 0.3 dex too high
    comes back as exactly that bias; all mass put in the oldest plane against a flat true SFH
    (1/16 per plane) gives per coarse range the bias (recovered - true fraction) counted here."""
    from sfh_pipeline.maps import COARSE_SFH_EDGES_YR, compare_with_truth, read_maps

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
    from sfh_pipeline.infer import write_tile_table
    from sfh_pipeline.maps import SUMMARY_HDUS, assemble_maps, spaxel_area_kpc2

    root, bins, _ = truth_case
    n_bins = int(bins.max()) + 1
    columns = {"BIN_ID": np.arange(n_bins), "N_SPAXELS": np.bincount(bins.ravel()), "LOG_MSTAR": np.full(n_bins, 8.0),
               "CHI2": np.ones(n_bins), "OOD": np.full(n_bins, 0.5), "SFH": np.full((n_bins, 16), 1 / 16),
               "ZH": np.zeros((n_bins, 16))}
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
