"""Small files in the real PHANGS-MUSE layout (a DATA/STAT cube with a celestial WCS), for tests."""

from __future__ import annotations

import numpy as np
from astropy.io import fits


def celestial(header, crval=(170.0625, 12.9915), scale_deg=0.2 / 3600):
    """Give ``header`` a TAN celestial WCS with square pixels of ``scale_deg``."""
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = crval
    header["CRPIX1"], header["CRPIX2"] = 10.0, 8.0
    header["CD1_1"], header["CD2_2"] = -scale_deg, scale_deg
    header["CD1_2"] = header["CD2_1"] = 0.0
    return header


def write_cube(path, *, bunit="10**(-20)*erg/s/cm**2/Angstrom", with_stat=True, shape=(40, 15, 20), primary_bunit=None):
    """Write a PHANGS-MUSE-like cube (random flux, STAT = 1 % of it, NaN spaxel (0, 0)); returns DATA."""
    rng = np.random.default_rng(1)
    data = rng.uniform(50, 100, shape).astype(np.float32)
    data[:, 0, 0] = np.nan  # a spaxel outside the mosaic
    hdus = [fits.PrimaryHDU()]
    if primary_bunit:
        hdus[0].header["BUNIT"] = primary_bunit
    for name, values in (("DATA", data), ("STAT", data * 0.01)):
        if name == "STAT" and not with_stat:
            continue
        hdu = fits.ImageHDU(values, name=name)
        h = celestial(hdu.header)
        h["CTYPE3"], h["CUNIT3"] = "AWAV", "Angstrom"
        h["CRVAL3"], h["CD3_3"], h["CRPIX3"] = 4749.75, 1.25, 1.0
        if bunit:
            h["BUNIT"] = bunit
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)
    return data
