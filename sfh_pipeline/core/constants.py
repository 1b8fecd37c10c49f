"""Physical constants and unit conversions: one definition each.

Plain numbers, so that importing them costs nothing; ``tests/test_constants.py`` checks
each against :mod:`astropy.constants` / :mod:`astropy.units` (same values to 1e-12).
"""

from __future__ import annotations

import math

#: Speed of light, km/s (exact by the SI definition of the metre).
C_KMS = 299792.458
#: Speed of light, Angstrom/s (f_nu <-> f_lambda: f_lambda = f_nu c / lambda^2).
C_AA_PER_S = C_KMS * 1e13
#: Nominal solar luminosity, erg/s (IAU 2015 Resolution B3; the L_sun of the SSP libraries'
#: L_sun/A per M_sun spectra).
L_SUN_ERG_S = 3.828e33
#: One megaparsec, cm (pc = 648000/pi au, au = 149597870700 m exactly, IAU 2012/2015).
MPC_CM = 3.0856775814913673e24
#: One arcsecond, radians.
ARCSEC_RAD = math.pi / 648000.0
