"""The constants of sfh_pipeline.constants are the physical ones (astropy's values)."""

from __future__ import annotations

import astropy.constants as const
import astropy.units as u
import pytest

from sfh_pipeline import constants


@pytest.mark.parametrize(
    "name, reference",
    [
        ("C_KMS", const.c.to_value(u.km / u.s)),
        ("C_AA_PER_S", const.c.to_value(u.AA / u.s)),
        ("L_SUN_ERG_S", const.L_sun.to_value(u.erg / u.s)),  # IAU 2015 nominal
        ("MPC_CM", (1 * u.Mpc).to_value(u.cm)),
        ("ARCSEC_RAD", (1 * u.arcsec).to_value(u.rad)),
    ],
)
def test_constant_is_astropys(name, reference):
    assert getattr(constants, name) == pytest.approx(reference, rel=1e-12)


def test_values_before_the_move_are_unchanged():
    """The literals the modules held before sfh_pipeline.constants (infer, mock, filters, maps)."""
    assert constants.C_KMS == 299792.458
    assert constants.C_AA_PER_S == 2.99792458e18
    assert constants.L_SUN_ERG_S == 3.828e33
    assert constants.MPC_CM == 3.0856775814913673e24
    assert constants.ARCSEC_RAD == 3.141592653589793 / (180.0 * 3600.0)
