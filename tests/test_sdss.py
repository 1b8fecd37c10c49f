"""The SDSS spectrum reader on the three real SDSS spectra shipped in the ppxf 8.2.6 source archive."""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline.constants import C_KMS
from sfh_pipeline.sdss import SDSS_FWHM_AA, read_sdss_spectrum

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
