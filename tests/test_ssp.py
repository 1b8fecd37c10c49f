"""SSP converters, the standard store and its loader, on small files in the real layouts."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from sfh_pipeline.instrument import muse_lsf_fwhm_aa
from sfh_pipeline.ssp import SSPError, load_ssp
from sfh_pipeline.ssp_formats import convert_ssp_file, read_ssp_file

from .support import ssp_fixtures as fx

CONVERT = dict(name="lib", source={"type": "file", "path": "x"}, sha256="0" * 64)


def test_bc03_reader_layout_units_and_order(tmp_path):
    lib = read_ssp_file(fx.write_bc03(tmp_path / "bc03.fits"), "bc03-fits")
    assert lib.shape == (3, fx.BC03_AGES.size, fx.BC03_WAVE.size)
    assert lib.flux.dtype.byteorder in ("=", "|") and lib.flux.dtype.isnative
    np.testing.assert_allclose(lib.metallicity_z, np.array(fx.BC03_ZSOL) * 0.02)
    np.testing.assert_allclose(lib.logzsol, np.log10(fx.BC03_ZSOL))
    np.testing.assert_allclose(lib.flux[1, 4], fx.bc03_flux(1, 4, fx.BC03_WAVE))
    np.testing.assert_allclose(lib.surviving_mass_fraction[2], np.linspace(1, 0.4, fx.BC03_AGES.size))
    assert lib.attrs["wavelength_medium"] == "air"
    assert lib.fwhm_aa[np.searchsorted(fx.BC03_WAVE, 5000.0)] == 2.5
    assert lib.fwhm_aa[np.searchsorted(fx.BC03_WAVE, 8000.0)] == 3.0


def test_bc03_missing_hdu_is_named(tmp_path):
    path = fx.write_bc03(tmp_path / "bc03.fits", drop_hdu="LIV_MSTAR_FRAC")
    with pytest.raises(SSPError, match=r"bc03\.fits.*LIV_MSTAR_FRAC"):
        read_ssp_file(path, "bc03-fits")


def test_bc03_nan_fails_conversion_and_writes_nothing(tmp_path):
    path = fx.write_bc03(tmp_path / "bc03.fits", nan_at=(1, 3, 500))
    store = tmp_path / "lib.zarr"
    with pytest.raises(SSPError, match=r"non-finite.*flux"):
        convert_ssp_file(
            path, store, "bc03-fits", wavelength_range_aa=(1800, 10000), age_range_yr=(1e6, 1.4e10), **CONVERT
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bc03.fits"]


def test_convert_store_round_trip_and_ranges(tmp_path):
    store = tmp_path / "lib.zarr"
    convert_ssp_file(
        fx.write_bc03(tmp_path / "bc03.fits"),
        store,
        "bc03-fits",
        wavelength_range_aa=(1800, 10000),
        age_range_yr=(1e6, 1.4e10),
        **CONVERT,
    )
    lib = load_ssp(store)
    np.testing.assert_array_equal(lib.ages_yr, [1e6, 1e7, 1e8, 1e9, 1e10, 1.4e10])
    assert lib.wavelength_aa[0] <= 1800 and lib.wavelength_aa[-1] >= 10000
    assert lib.wavelength_aa[1] > 1800 and lib.wavelength_aa[-2] < 10000  # one pixel beyond, no more
    assert lib.flux.dtype == np.float32
    assert lib.attrs["sha256"] == "0" * 64 and lib.attrs["source"] == CONVERT["source"]
    assert lib.attrs["code_version"] and lib.attrs["store_format_version"] == 1
    group = zarr.open_group(store, mode="r")
    assert group["flux"].chunks == (1, lib.shape[1], lib.shape[2])
    narrow = load_ssp(store, wavelength_range_aa=(4800, 7000), age_range_yr=(1e7, 1e9))
    assert narrow.shape[1] == 3 and narrow.wavelength_aa[0] <= 4800 <= narrow.wavelength_aa[1]


def test_load_rejects_missing_store_and_uncovered_range(tmp_path):
    with pytest.raises(SSPError, match="ssp stage"):
        load_ssp(tmp_path / "absent.zarr")
    store = tmp_path / "lib.zarr"
    convert_ssp_file(
        fx.write_bc03(tmp_path / "bc03.fits"),
        store,
        "bc03-fits",
        wavelength_range_aa=(3000, 9000),
        age_range_yr=(1e6, 1.4e10),
        **CONVERT,
    )
    with pytest.raises(SSPError, match="covers"):
        load_ssp(store, wavelength_range_aa=(1800, 9000))


def test_ppxf_npz_reader_transposes_and_sorts(tmp_path):
    lib = read_ssp_file(fx.write_ppxf_npz(tmp_path / "lib.npz"), "ppxf-npz")
    assert lib.shape == (2, 3, fx.PPXF_LAM.size)
    np.testing.assert_array_equal(lib.ages_yr, [1e7, 1e9, 1e10])
    np.testing.assert_array_equal(lib.logzsol, [-1.0, 0.0])
    np.testing.assert_allclose(lib.metallicity_z, 0.019 * 10.0 ** np.array([-1.0, 0.0]))
    # template (age 0.01 Gyr, [M/H] = 0) was written at [:, 1, 0]
    expected = 1e-5 * 0.01**-0.5 + 1e-6 * (fx.PPXF_LAM / 5000.0)
    np.testing.assert_allclose(lib.flux[1, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(lib.surviving_mass_fraction[1, 0], 0.9 + 0.06, rtol=1e-12)
    np.testing.assert_array_equal(lib.fwhm_aa, 2.51)


def test_ppxf_npz_bad_inputs(tmp_path):
    with pytest.raises(SSPError, match="masses"):
        read_ssp_file(fx.write_ppxf_npz(tmp_path / "a.npz", drop="masses"), "ppxf-npz")
    with pytest.raises(SSPError, match="not normalised to one solar mass"):
        read_ssp_file(fx.write_ppxf_npz(tmp_path / "b.npz", masses_scale=1e6), "ppxf-npz")
    truncated = tmp_path / "c.npz"
    truncated.write_bytes((tmp_path / "b.npz").read_bytes()[:1000])
    with pytest.raises(SSPError, match="c.npz"):
        read_ssp_file(truncated, "ppxf-npz")


def test_emiles_reader_from_tar_archive(tmp_path):
    lib = read_ssp_file(fx.write_emiles_tar(tmp_path / "emiles.tar.gz"), "emiles-fits")
    assert lib.shape == (3, 3, fx.EMILES_N)
    np.testing.assert_allclose(lib.ages_yr, np.array(fx.EMILES_AGES) * 1e9)
    np.testing.assert_allclose(lib.logzsol, fx.EMILES_MH)
    np.testing.assert_allclose(lib.wavelength_aa[[0, 1]], [1680.2, 1681.1])
    # M(*+remn)/M_total of the slope-1.30 row
    np.testing.assert_allclose(lib.surviving_mass_fraction[0, 1], 0.8 - 0.004, atol=1e-4)
    fwhm = lib.fwhm_aa
    assert fwhm[np.searchsorted(lib.wavelength_aa, 5000)] == 2.51
    assert fwhm[-1] == pytest.approx(2.3548 * 60 / 299792.458 * lib.wavelength_aa[-1], rel=1e-3)
    assert lib.attrs["imf"] == "un slope 1.30"


def test_emiles_reader_from_directory_equals_tar(tmp_path):
    import tarfile

    archive = fx.write_emiles_tar(tmp_path / "emiles.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    a = read_ssp_file(archive, "emiles-fits")
    b = read_ssp_file(tmp_path / "unpacked", "emiles-fits")
    np.testing.assert_array_equal(a.flux, b.flux)


def test_emiles_bad_inputs(tmp_path):
    with pytest.raises(SSPError, match="mass table"):
        read_ssp_file(fx.write_emiles_tar(tmp_path / "a.tar.gz", with_masses=False), "emiles-fits")
    with pytest.raises(SSPError, match="incomplete E-MILES grid"):
        read_ssp_file(fx.write_emiles_tar(tmp_path / "b.tar.gz", skip_spectrum=(0.0, 1.0)), "emiles-fits")
    with pytest.raises(SSPError, match="no row"):
        read_ssp_file(fx.write_emiles_tar(tmp_path / "c.tar.gz", skip_mass=(0.22, 10.0)), "emiles-fits")


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(SSPError, match="unknown SSP format 'bc99'"):
        read_ssp_file(tmp_path / "x", "bc99")
    with pytest.raises(SSPError, match="does not exist"):
        read_ssp_file(tmp_path / "x.fits", "bc03-fits")


def test_broadened_library_reaches_the_muse_lsf(tmp_path):
    lib = read_ssp_file(fx.write_bc03(tmp_path / "bc03.fits"), "bc03-fits").select((4700, 7100))
    muse = lib.broadened(muse_lsf_fwhm_aa)
    np.testing.assert_allclose(muse.fwhm_aa, np.maximum(lib.fwhm_aa, muse_lsf_fwhm_aa(lib.wavelength_aa)))
    # flux is conserved away from the edges of the window
    inner = (lib.wavelength_aa > 4800) & (lib.wavelength_aa < 7000)
    np.testing.assert_allclose(muse.flux[..., inner].sum(-1), lib.flux[..., inner].sum(-1), rtol=1e-4)
