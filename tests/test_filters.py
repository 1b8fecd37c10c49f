"""Tests for sfh_pipeline.filters against the real files shipped in the installed ppxf."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits

from sfh_pipeline import filters as F

C_AA_PER_S = 2.99792458e18


@pytest.fixture(scope="module")
def throughputs():
    return F.load_throughputs()


@pytest.fixture(scope="module")
def info():
    return F.reference_filter_info()


@pytest.fixture(scope="module")
def vega():
    return F.vega_spectrum()


@pytest.fixture(scope="module")
def wide_grid():
    """A 1 A grid covering all eight curves."""
    return np.arange(1500.0, 11000.0, 1.0)


def test_all_curves_load(throughputs):
    assert F.PHANGS_FILTERS == tuple(throughputs)
    for key, t in throughputs.items():
        assert t.key == key
        assert F.FILTER_RES_HEADERS[key] in t.source
        assert t.wavelength_aa.shape == t.throughput.shape and t.wavelength_aa.size > 10
        assert np.all(np.diff(t.wavelength_aa) > 0)
        assert np.all(t.throughput >= 0) and np.any(t.throughput > 0)
        assert not t.wavelength_aa.flags.writeable  # cached arrays are shared: keep them read-only


@pytest.mark.parametrize("key", F.PHANGS_FILTERS)
def test_pivot_matches_info_lambda_c(throughputs, info, key):
    # The info file's ``lambda_c`` is the pivot wavelength (EAZY computes it with
    # the pivot formula), so we compare pivot to lambda_c. The photon-weighted
    # mean wavelength int T lambda / int T differs from lambda_c by 3.7-29 A
    # for these bands, so the 2 A test does tell the two apart.
    lambda_c, _ = info[F.FILTER_RES_HEADERS[key]]
    t = throughputs[key]
    assert abs(t.pivot_wavelength_aa - lambda_c) < 2.0
    lam, thr = t.wavelength_aa, t.throughput
    mean = np.trapezoid(thr * lam, lam) / np.trapezoid(thr, lam)
    assert abs(mean - lambda_c) > 2.0


# F275W: ppxf's Vega SED gives AB-Vega = 1.545, the info file 1.501 (+0.044 mag).
# This is not the curve or the integration: every band in FILTER.RES.txt shows the
# same UV excess with this Vega (about +0.07 at 2200-2400 A, +0.04-0.05 at
# 2700-2800 A, ~0 at 3000-3400 A, +0.19 in GALEX FUV). ppxf's flux_vega is
# fainter in the UV than the Vega spectrum EAZY used for its table. Our value
# equals ppxf's own ppxf_util.mag_spectrum (see the next test).
_F275W_XFAIL = pytest.mark.xfail(
    strict=True, reason="ppxf's Vega SED is about 4% fainter near 2700 A than the Vega EAZY used (+0.044 mag)"
)


@pytest.mark.parametrize(
    "key", [pytest.param(k, marks=_F275W_XFAIL) if k == "wfc3-uvis_f275w" else k for k in F.PHANGS_FILTERS]
)
def test_ab_minus_vega_matches_info(throughputs, info, vega, key):
    # AB - Vega of a band = AB magnitude of Vega, as Vega has Vega magnitude 0.
    lam, flux = vega
    _, ab_minus_vega = info[F.FILTER_RES_HEADERS[key]]
    ab = F.PhotometryOperator(lam, throughputs[key]).ab_mag(flux)[0]
    assert abs(ab - ab_minus_vega) < 0.02


def test_vega_matches_ppxf_mag_spectrum(throughputs, vega):
    from ppxf import ppxf_util

    lam, flux = vega
    ours = F.PhotometryOperator(lam, throughputs).ab_mag(flux)
    for key, mag in zip(F.PHANGS_FILTERS, ours):
        ref = np.ravel(ppxf_util.mag_spectrum(lam, flux, bands=[F.FILTER_RES_HEADERS[key]], system="AB"))[0]
        assert mag == pytest.approx(ref, abs=1e-9), key


def test_flat_fnu_is_ab_zero(throughputs, wide_grid):
    flux = 3631e-23 * C_AA_PER_S / wide_grid**2  # f_nu = 3631 Jy as f_lambda [erg/s/cm2/A]
    op = F.PhotometryOperator(wide_grid, throughputs)
    np.testing.assert_allclose(op.ab_mag(flux), 0.0, atol=1e-6)
    np.testing.assert_allclose(op.fnu(flux), 3631e-23, rtol=1e-9)


def test_flat_flambda_mean_is_the_constant(throughputs, wide_grid):
    op = F.PhotometryOperator(wide_grid, throughputs)
    np.testing.assert_allclose(op.mean_flambda(np.full(wide_grid.size, 2.5e-17)), 2.5e-17, rtol=1e-12)
    # <f_nu> = <f_lambda> lambda_pivot^2 / c for any spectrum
    np.testing.assert_allclose(
        op.fnu(np.full(wide_grid.size, 2.5e-17)), 2.5e-17 * op.pivot_wavelength_aa**2 / C_AA_PER_S, rtol=1e-12
    )


def test_pivot_on_spectrum_grid_close_to_curve_pivot(throughputs, wide_grid):
    op = F.PhotometryOperator(wide_grid, throughputs)
    curve = [t.pivot_wavelength_aa for t in throughputs.values()]
    np.testing.assert_allclose(op.pivot_wavelength_aa, curve, atol=0.5)


def test_vectorised_equals_loop(throughputs, wide_grid):
    rng = np.random.default_rng(42)
    stack = rng.lognormal(-40, 0.5, size=(3, 4, wide_grid.size))
    op = F.PhotometryOperator(wide_grid, throughputs)
    for method in (op.mean_flambda, op.fnu, op.ab_mag):
        out = method(stack)
        assert out.shape == (3, 4, len(F.PHANGS_FILTERS))
        loop = np.array([[method(stack[i, j]) for j in range(4)] for i in range(3)])
        np.testing.assert_allclose(out, loop, rtol=1e-12, atol=0)


def test_uncovered_filter_raises(throughputs):
    muse = np.arange(4750.0, 9350.0, 1.25)
    with pytest.raises(ValueError, match="wfc3-uvis_f275w.*2200.0-3915.0 A.*4750.0-9348.8 A"):
        F.PhotometryOperator(muse, throughputs)


def test_wrong_flux_length_raises(throughputs, wide_grid):
    op = F.PhotometryOperator(wide_grid, throughputs)
    with pytest.raises(ValueError, match="shape"):
        op.fnu(np.ones(wide_grid.size - 1))


def test_ab_magnitude():
    np.testing.assert_allclose(F.ab_magnitude([3631e-23, 363.1e-23]), [0.0, 2.5], atol=1e-12)
    assert np.all(np.isnan(F.ab_magnitude([0.0, -1e-30, np.nan])))


def test_missing_header_names_the_file(tmp_path):
    path = tmp_path / "FILTER.RES.txt"
    path.write_text("# comment\n  3 some/other_filter.dat lambda_c= 5.0e+03\n1 4000 0\n2 5000 1\n3 6000 0\n")
    with pytest.raises(ValueError, match=re.escape(str(path.resolve().name)) + r".*hst/wfc3/UVIS/f275w\.dat"):
        F.load_throughputs(["wfc3-uvis_f275w"], path=path)


def test_write_throughput_table_round_trips(throughputs, tmp_path):
    path = tmp_path / "hst_throughputs.fits"
    F.write_throughput_table(path, throughputs)
    F.write_throughput_table(path, throughputs)  # overwrites in place
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind

    back = F.read_throughput_table(path)
    assert tuple(back) == F.PHANGS_FILTERS
    for key, t in throughputs.items():
        np.testing.assert_array_equal(back[key].wavelength_aa, t.wavelength_aa)
        np.testing.assert_array_equal(back[key].throughput, t.throughput)
        assert back[key].source == t.source
    with fits.open(path) as hdul:
        assert [h.name for h in hdul[1:]] == [k.upper() for k in F.PHANGS_FILTERS]
        for key, t in throughputs.items():
            hdu = hdul[key.upper()]
            assert hdu.columns["WAVELENGTH"].unit == "Angstrom"
            assert hdu.header["PIVOT"] == pytest.approx(t.pivot_wavelength_aa, rel=1e-12)
            assert hdu.header["SOURCE"] == t.source


def test_write_filter_products(tmp_path):
    check = F.write_filter_products(F.PHANGS_FILTERS, tmp_path / "t.fits", tmp_path / "c.json")
    assert list(check) == list(F.PHANGS_FILTERS)
    assert set(F.read_throughput_table(tmp_path / "t.fits")) == set(F.PHANGS_FILTERS)
    for key, row in check.items():
        assert abs(row["pivot_aa"] - row["reference_pivot_aa"]) < 2.0, key


def test_the_config_schema_offers_the_known_filters_in_order():
    """The schema cannot import PHANGS_FILTERS: its enum spells the same keys, in order."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    schema = yaml.safe_load(path.read_text())
    assert tuple(schema["properties"]["filters"]["items"]["enum"]) == F.PHANGS_FILTERS
