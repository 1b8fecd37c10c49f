"""The E-MILES converter on the real E-MILES files shipped in the ppxf 8.2.6 source archive."""

from __future__ import annotations

import numpy as np
import pytest

from sfh_pipeline.ssp_formats import read_ssp_file

from .support.ppxf_sdist import extract_ppxf_folder

pytestmark = [pytest.mark.slow, pytest.mark.network]  # pip downloads ppxf-8.2.6.tar.gz from the index


@pytest.fixture(scope="module")
def emiles_dir(tmp_path_factory):
    """The 150 E-MILES SSPs and the Vazdekis mass table from ppxf-8.2.6.tar.gz (25 MB, cached)."""
    return extract_ppxf_folder("miles_models", tmp_path_factory.mktemp("emiles"))


def test_real_emiles_grid(emiles_dir):
    lib = read_ssp_file(emiles_dir, "emiles-fits")
    assert lib.shape == (6, 25, 53689)
    np.testing.assert_allclose(lib.logzsol, [-1.71, -1.31, -0.71, -0.40, 0.00, 0.22])
    assert lib.ages_yr[0] == pytest.approx(6.31e7) and lib.ages_yr[-1] == pytest.approx(1.58489e10)
    np.testing.assert_allclose(lib.wavelength_aa[[0, -1]], [1680.2, 49999.4], atol=0.05)
    lib.validate()
    # The solar-metallicity 10 Gyr SSP: L(5500 A) of order 1e-5 L_sun/A per M_sun formed
    iz, ia = 4, int(np.argmin(np.abs(lib.ages_yr - 1e10)))
    window = (lib.wavelength_aa > 5450) & (lib.wavelength_aa < 5550)
    assert 1e-5 < lib.flux[iz, ia, window].mean() < 3e-5
    # surviving (stars + remnants) fractions fall with age and stay between 0.5 and 1
    frac = lib.surviving_mass_fraction
    assert np.all(np.diff(frac, axis=1) <= 1e-4) and frac.min() > 0.5 and frac.max() < 1.0
    assert lib.attrs["isochrones"] == "Padova+00" and lib.attrs["imf"] == "un slope 1.30"
