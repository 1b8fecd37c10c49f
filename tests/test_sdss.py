"""The SDSS spectrum reader on the three real SDSS spectra shipped in the ppxf 8.2.6 source archive."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sfh_pipeline.constants import C_KMS
from sfh_pipeline.sdss import SDSS_FWHM_AA, read_sdss_spectrum, read_spectrum

from .support.ppxf_sdist import extract_ppxf_folder

pytestmark = [pytest.mark.slow, pytest.mark.network]  # pip downloads ppxf-8.2.6.tar.gz from the index


@pytest.fixture(scope="module")
def spectra_dir(tmp_path_factory):
    return extract_ppxf_folder("spectra", tmp_path_factory.mktemp("sdss"))


# heliocentric velocities of the SDSS redshifts against those pPXF's examples fit to the same
# files (ppxf_python_reference_output.txt: 1150-1156 and 1213 km/s; NGC 4636 938 km/s in NED);
# the vacuum wavelength of the first pixel (log10 = COEFF0 of the DR8 files, loglam[0] of DR12)
@pytest.mark.parametrize(
    "filename, velocity_kms, n_pixels, log_vacuum_start",
    [
        ("NGC3073_SDSS_DR8.fits", 1150, 3856, 3.5793),
        ("NGC3522_SDSS_DR8.fits", 1213, 3847, 3.5802),
        ("NGC4636_SDSS_DR12.fits", 938, 3838, 3.5808),
    ],
)
def test_real_sdss_spectra(spectra_dir, filename, velocity_kms, n_pixels, log_vacuum_start):
    spectrum = read_sdss_spectrum(spectra_dir / filename)
    assert spectrum.wave_aa.size == n_pixels
    assert abs(C_KMS * spectrum.redshift - velocity_kms) < 60
    # air wavelengths: 1.08 A below vacuum at 3800 A (Ciddor 1996; n - 1 = 2.83e-4), 1e-4 dex pixels
    assert 1.0 < 10**log_vacuum_start - spectrum.wave_aa[0] < 1.15
    np.testing.assert_allclose(np.log10(spectrum.wave_aa[1:] / spectrum.wave_aa[:-1]), 1e-4, rtol=2e-3)
    # f_lambda in 1e-17 erg/s/cm^2/A of bright galaxy centres in a 3" fibre, S/N ~ 50 per pixel
    good = ~spectrum.bad
    assert 50 < np.median(spectrum.flux[good]) < 1000
    assert 40 < spectrum.median_snr() < 60
    assert np.all(np.isfinite(spectrum.error[good]) & (spectrum.error[good] > 0))
    assert np.all(np.isnan(spectrum.flux[spectrum.bad]))
    assert spectrum.bad.mean() < 0.02
    # the instrumental FWHM: per pixel from wdisp (DR12), else the constant approximation
    fwhm = spectrum.lsf_fwhm_aa(np.array([5000.0, 7000.0]))
    if "DR12" in filename:
        assert 2.3 < np.median(spectrum.fwhm_aa) < 3.2 and fwhm[0] != fwhm[1]
    else:
        np.testing.assert_allclose(fwhm, SDSS_FWHM_AA, rtol=1e-3)


def test_a_file_of_another_layout_is_named(tmp_path):
    from astropy.io import fits

    path = tmp_path / "cube.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 4)), name="DATA")]).writeto(path)
    with pytest.raises(ValueError, match="cube.fits is not an SDSS spectrum"):
        read_sdss_spectrum(path)


@pytest.fixture(scope="module")
def manga_files(tmp_path_factory):
    """The two files of real MaNGA spaxels of the embedded default, fetched as the workflow does
    (the sdss-mangadap wheel from the index, members checked against their sha256)."""
    import yaml

    from sfh_pipeline.fetch import fetch_source

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    out = tmp_path_factory.mktemp("manga")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sfh-pipeline"
    return {
        Path(path).name: fetch_source(source, out / Path(path).name, cache_dir=cache)
        for path, source in config["downloads"].items()
        if "/manga/" in path
    }


def test_real_manga_spaxels(manga_files):
    """Spaxel 0 of the DAP's test file (8131-6102, x 27 y 27): the NSA redshift, log-spaced
    vacuum wavelengths turned to air, MaNGA's R ~ 2000 (FWHM 2.5-3.5 A at 4000-7000 A), a bright
    bulge at S/N > 100 per pixel; the two unusable rows are named, not read."""
    path = manga_files["MaNGA_test_spectra.fits.gz"]
    spectrum = read_spectrum(path, 0, name="8131-6102-x27y27")
    assert spectrum.name == "8131-6102-x27y27" and spectrum.wave_aa.size == 4563
    assert spectrum.redshift == pytest.approx(0.0495282)
    # 1e-4 dex pixels from 3621.6 A (vacuum) = 3620.6 A in air
    np.testing.assert_allclose(np.log10(spectrum.wave_aa[1:] / spectrum.wave_aa[:-1]), 1e-4, rtol=2e-3)
    assert 3620.0 < spectrum.wave_aa[0] < 3621.2 and 10350 < spectrum.wave_aa[-1] < 10353
    fwhm = spectrum.lsf_fwhm_aa(np.array([4000.0, 7000.0]))
    assert 2.0 < fwhm[0] < 3.0 and 2.6 < fwhm[1] < 3.8
    assert 100 < spectrum.median_snr() < 130
    assert spectrum.bad.mean() < 0.01 and np.isnan(spectrum.flux[spectrum.bad]).all()
    # the low-S/N spaxel of 7815-6101 reads, at S/N ~ 1.5; its neighbour in the file has no pixel
    assert spectrum.median_snr() > 50 * read_spectrum(path, 6).median_snr()
    with pytest.raises(ValueError, match="spaxel 5 has no usable pixel"):
        read_spectrum(path, 5)
    with pytest.raises(ValueError, match="has spaxels 0-7, not 8"):
        read_spectrum(path, 8)
    with pytest.raises(ValueError, match="one per row: say which row"):
        read_spectrum(path)
    star_forming = read_spectrum(manga_files["MaNGA_multicomp_test_spectra.fits.gz"], 1)
    assert star_forming.redshift == pytest.approx(0.134659) and 25 < star_forming.median_snr() < 40


def test_a_manga_file_without_its_hdus_is_named(tmp_path):
    from astropy.io import fits

    path = tmp_path / "spaxels.fits"
    hdus = [fits.ImageHDU(np.linspace(3600, 10000, 50), name="WAVE"), fits.ImageHDU(np.ones((2, 50)), name="FLUX")]
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(path)
    with pytest.raises(ValueError, match="not a file of MaNGA spaxels: it lacks the HDUs IVAR, MASK, SRES, Z"):
        read_spectrum(path, 0)
    shape = tmp_path / "shape.fits"
    hdus = [fits.ImageHDU(np.linspace(3600, 10000, 50), name="WAVE"), fits.ImageHDU(np.ones((2, 50)), name="FLUX")]
    hdus += [fits.ImageHDU(np.ones((2, 50)), name=n) for n in ("IVAR", "MASK")]
    hdus += [fits.ImageHDU(np.ones((2, 49)), name="SRES"), fits.ImageHDU(np.zeros(2), name="Z")]
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(shape)
    with pytest.raises(ValueError, match=r"SRES has shape \(2, 49\), not \(spaxels, pixels\) = \(2, 50\)"):
        read_spectrum(shape, 0)
