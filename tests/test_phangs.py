"""PHANGS-MUSE and PHANGS-HST readers on small files written in the real layouts."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from sfh_pipeline.constants import C_AA_PER_S
from sfh_pipeline.phangs import DataError, HstImage, MuseCube

from .support.phangs_files import celestial, write_cube


def test_cube_reader_tiles_and_units(tmp_path):
    data = write_cube(tmp_path / "NGC3627_PHANGS_DATACUBE_copt_1.05asec.fits")
    cube = MuseCube.open(tmp_path / "NGC3627_PHANGS_DATACUBE_copt_1.05asec.fits")
    assert cube.shape == (15, 20) and cube.flux_scale == pytest.approx(1e-20)
    np.testing.assert_allclose(cube.wavelength_aa[[0, 1, -1]], [4749.75, 4751.0, 4749.75 + 39 * 1.25])
    flux, var = cube.read_tile(slice(3, 9), slice(5, 17))
    assert flux.shape == (40, 6, 12)
    np.testing.assert_allclose(flux, data[:, 3:9, 5:17] * 1e-20, rtol=1e-6)
    np.testing.assert_allclose(var, (data[:, 3:9, 5:17] * np.float32(0.01)).astype(float) * 1e-40, rtol=1e-6)
    ra, dec = cube.wcs.pixel_to_world_values(9, 7)
    assert (ra, dec) == pytest.approx((170.0625, 12.9915))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"with_stat": False}, "no HDU 'STAT'"),
        ({"bunit": "Jy"}, "BUNIT 'Jy'"),
        ({"bunit": None}, "no BUNIT in the DATA or primary header"),
    ],
)
def test_cube_bad_input(tmp_path, kwargs, message):
    write_cube(tmp_path / "c.fits", **kwargs)
    with pytest.raises(DataError, match=message):
        MuseCube.open(tmp_path / "c.fits")


def test_cube_unit_from_primary_header(tmp_path):
    """MUSE cut-outs (e.g. the Abell 478 minicube) keep BUNIT in the primary header only."""
    write_cube(tmp_path / "c.fits", bunit=None, primary_bunit="10**(-17)*erg/s/cm**2/Angstrom")
    assert MuseCube.open(tmp_path / "c.fits").flux_scale == pytest.approx(1e-17)


def test_corrupted_and_missing_cube(tmp_path):
    write_cube(tmp_path / "c.fits")
    (tmp_path / "bad.fits").write_bytes((tmp_path / "c.fits").read_bytes()[:3000])
    with pytest.raises(DataError, match="bad.fits"):
        MuseCube.open(tmp_path / "bad.fits")
    with pytest.raises(DataError, match="does not exist"):
        MuseCube.open(tmp_path / "absent.fits")


def write_hst(tmp_path, *, photflam=1.1e-19, photfnu=None, bunit="ELECTRONS/S"):
    rng = np.random.default_rng(2)
    sci = rng.uniform(0.1, 2.0, (30, 25))
    wht = rng.uniform(10, 100, (30, 25))
    wht[0, :5] = 0.0  # no exposure
    header = celestial(fits.Header(), scale_deg=0.04 / 3600)
    header["BUNIT"] = bunit
    header["PHOTPLAM"] = 5308.4
    if photflam:
        header["PHOTFLAM"] = photflam
    if photfnu:
        header["PHOTFNU"] = photfnu
    fits.PrimaryHDU(sci, header=header).writeto(tmp_path / "sci.fits", overwrite=True)
    fits.PrimaryHDU(wht, header=header).writeto(tmp_path / "wht.fits", overwrite=True)
    return sci, wht


def test_hst_reader_converts_electrons_per_second(tmp_path):
    sci, wht = write_hst(tmp_path)
    image = HstImage.read("wfc3-uvis_f555w", tmp_path / "sci.fits", tmp_path / "wht.fits")
    np.testing.assert_allclose(image.flux[1:], sci[1:] * 1.1e-19)
    np.testing.assert_allclose(image.error[1:], 1.1e-19 / np.sqrt(wht[1:]))
    assert np.all(np.isnan(image.flux[0, :5])) and np.isfinite(image.flux[0, 5])
    # PHOTFNU (Jy per e-/s) gives the same f_lambda at the pivot wavelength
    photfnu = 1.1e-19 * 5308.4**2 / C_AA_PER_S / 1e-23
    write_hst(tmp_path, photflam=None, photfnu=photfnu)
    same = HstImage.read("wfc3-uvis_f555w", tmp_path / "sci.fits", tmp_path / "wht.fits")
    np.testing.assert_allclose(same.flux[1:], image.flux[1:], rtol=1e-10)


def test_hst_bad_input(tmp_path):
    write_hst(tmp_path, bunit="COUNTS")
    with pytest.raises(DataError, match="electrons/s"):
        HstImage.read("acs-wfc_f435w", tmp_path / "sci.fits", tmp_path / "wht.fits")
    write_hst(tmp_path, photflam=None)
    with pytest.raises(DataError, match="PHOTFLAM"):
        HstImage.read("acs-wfc_f435w", tmp_path / "sci.fits", tmp_path / "wht.fits")
    with pytest.raises(DataError, match="acs-wfc_f435w"):
        HstImage.read("acs-wfc_f435w", tmp_path / "absent.fits", tmp_path / "wht.fits")
