"""Readers of PHANGS-MUSE DR1 cubes and PHANGS-HST images, with units checked through astropy.

MUSE cubes (``<GAL>_PHANGS_DATACUBE_copt_<fwhm>asec.fits``) have HDUs ``DATA`` and ``STAT``
(variance), BUNIT ``10**(-20)*erg/s/cm**2/Angstrom`` and a linear wavelength axis
(CRVAL3, CD3_3 or CDELT3, CRPIX3). They are 10-40 GB, so :class:`MuseCube` never reads one
whole: :meth:`MuseCube.read_tile` reads a spatial tile of every wavelength with fitsio's
partial reads. PHANGS-HST images (``..._exp-drc-sci.fits`` in electrons/s, with PHOTFLAM
or PHOTFNU; ``..._err-drc-wht.fits`` inverse variance) are read whole (they are 2-D).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import astropy.units as u
import fitsio
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..core.constants import C_AA_PER_S

FLAM = u.erg / u.s / u.cm**2 / u.AA


class DataError(ValueError):
    """An input file that cannot be used; the message names the file and the fix."""


def _open_hdu(path: Path, name: str) -> fitsio.hdu.base.HDUBase:
    try:
        fits_file = fitsio.FITS(str(path))
    except OSError as err:
        raise DataError(f"{path}: not a readable FITS file ({err}); download it again") from err
    if name not in fits_file:
        names = [hdu.get_extname() for hdu in fits_file]
        raise DataError(f"{path}: no HDU {name!r} (found {names}); is this a PHANGS-MUSE DR1 cube?")
    return fits_file[name]


def flux_density_scale(bunit: str, where: str) -> float:
    """Factor turning values of unit ``bunit`` into erg s^-1 cm^-2 A^-1."""
    try:
        unit = u.Unit(bunit, format="fits")
        return float(unit.to(FLAM))
    except (ValueError, u.UnitConversionError, TypeError) as err:
        raise DataError(f"{where}: BUNIT {bunit!r} is not a flux density per Angstrom ({err})") from err


@dataclasses.dataclass
class MuseCube:
    """A PHANGS-MUSE cube opened for tiled reading.

    Attributes
    ----------
    path : Path
    wavelength_aa : numpy.ndarray
        Observed (air) wavelengths of the planes, A.
    shape : (ny, nx)
        Spatial size in spaxels.
    wcs : astropy.wcs.WCS
        Celestial WCS of the spaxel grid.
    flux_scale : float
        Factor from stored values to erg s^-1 cm^-2 A^-1 (1e-20 for DR1).
    """

    path: Path
    wavelength_aa: np.ndarray
    shape: tuple[int, int]
    wcs: WCS
    flux_scale: float

    @classmethod
    def open(cls, path: str | os.PathLike) -> MuseCube:
        path = Path(path)
        if not path.exists():
            raise DataError(f"MUSE cube {path} does not exist (config key sample.muse_dir)")
        data = _open_hdu(path, "DATA")
        _open_hdu(path, "STAT")
        header = data.read_header()
        if header.get("NAXIS") != 3:
            raise DataError(f"{path}[DATA]: expected a 3-D cube, got NAXIS={header.get('NAXIS')}")
        step = header.get("CD3_3", header.get("CDELT3"))
        if step is None or "CRVAL3" not in header:
            raise DataError(f"{path}[DATA]: no linear wavelength axis (CRVAL3 and CD3_3 or CDELT3)")
        n_wave = int(header["NAXIS3"])
        wave = header["CRVAL3"] + step * (np.arange(n_wave) + 1 - header.get("CRPIX3", 1.0))
        if str(header.get("CUNIT3", "Angstrom")).strip().lower() in ("m", "meter"):
            wave = wave * 1e10
        astropy_header = fits.Header.fromstring(str(_as_astropy_header(header)))
        return cls(
            path=path,
            wavelength_aa=wave,
            shape=(int(header["NAXIS2"]), int(header["NAXIS1"])),
            wcs=WCS(astropy_header).celestial,
            flux_scale=flux_density_scale(_cube_bunit(path, header), f"{path}[DATA]"),
        )

    def read_tile(self, y: slice, x: slice, planes: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Flux and variance of a spatial tile, (n_planes, ny, nx), in erg s^-1 cm^-2 A^-1 (and squared).

        Only the tile (and only ``planes`` of the wavelength axis) is read from disk (fitsio
        partial read), whatever the cube's size.
        """
        with fitsio.FITS(str(self.path)) as fits_file:
            flux = fits_file["DATA"][planes, y, x].astype(np.float64) * self.flux_scale
            var = fits_file["STAT"][planes, y, x].astype(np.float64) * self.flux_scale**2
        return flux, var


def _cube_bunit(path: Path, data_header: fitsio.FITSHDR) -> str:
    """BUNIT of the DATA extension or, as in some MUSE products (e.g. cut-outs), of the primary header."""
    bunit = str(data_header.get("BUNIT", "") or "").strip()
    if not bunit:
        with fitsio.FITS(str(path)) as fits_file:
            bunit = str(fits_file[0].read_header().get("BUNIT", "") or "").strip()
    if not bunit:
        raise DataError(
            f"{path}: no BUNIT in the DATA or primary header; set it to the flux unit of the cube "
            "(MUSE: '10**(-20)*erg/s/cm**2/Angstrom')"
        )
    return bunit


def _as_astropy_header(header: fitsio.FITSHDR) -> fits.Header:
    out = fits.Header()
    for record in header.records():
        name = record["name"]
        if name and name not in ("COMMENT", "HISTORY", "") and record.get("value") is not None:
            try:
                out[name] = record["value"]
            except (ValueError, KeyError):
                continue
    return out


@dataclasses.dataclass
class HstImage:
    """A PHANGS-HST band: flux density and its error in erg s^-1 cm^-2 A^-1 per pixel, with WCS."""

    key: str
    flux: np.ndarray
    error: np.ndarray
    wcs: WCS
    pivot_aa: float

    @classmethod
    def read(
        cls,
        key: str,
        sci_path: str | os.PathLike,
        wht_path: str | os.PathLike,
        around: tuple[WCS, tuple[int, int], float] | None = None,
    ) -> HstImage:
        """Read the ``exp-drc-sci`` (electrons/s) and ``err-drc-wht`` (inverse variance) pair.

        Electrons/s are converted with PHOTFLAM (erg s^-1 cm^-2 A^-1 per e-/s) or, if only
        PHOTFNU (Jy per e-/s) is given, with PHOTFNU and PHOTPLAM; pixels with zero weight
        or non-finite values become NaN.

        ``around = (wcs, (ny, nx), margin_arcsec)`` reads only the part of the images that
        covers that pixel grid plus the margin (memory-mapped section), so that a large
        mosaic is never loaded whole; the WCS is that of the cutout. A cutout that misses
        the image entirely is an error.
        """
        sci_path, wht_path = Path(sci_path), Path(wht_path)
        for path in (sci_path, wht_path):
            if not path.exists():
                raise DataError(f"HST image {path} ({key}) does not exist (config key sample.hst_dir)")
        try:
            with fits.open(sci_path, memmap=True) as hdul:
                hdu = next((h for h in hdul if h.is_image and h.header.get("NAXIS") == 2), None)
                if hdu is None:
                    raise DataError(f"{sci_path}: no 2-D image HDU")
                header = {**dict(hdul[0].header), **dict(hdu.header)}
                wcs = WCS(hdu.header).celestial
                shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
                ys, xs = (
                    (slice(0, shape[0]), slice(0, shape[1]))
                    if around is None
                    else _cutout(wcs, shape, *around, where=f"{sci_path} ({key})")
                )
                sci = np.asarray(hdu.section[ys, xs], dtype=np.float64)
                wcs = wcs[ys, xs]
            with fits.open(wht_path, memmap=True) as hdul:
                hdu = next((h for h in hdul if h.is_image and h.header.get("NAXIS") == 2), None)
                if hdu is None or (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"])) != shape:
                    raise DataError(f"{wht_path}: no weight image of the science image's shape {shape}")
                wht = np.asarray(hdu.section[ys, xs], dtype=np.float64)
        except (OSError, TypeError, KeyError) as err:
            raise DataError(
                f"{sci_path} / {wht_path} ({key}): not readable FITS images ({err}); download them again"
            ) from err
        bunit = str(header.get("BUNIT", "ELECTRONS/S")).upper().replace(" ", "")
        if bunit not in ("ELECTRONS/S", "ELECTRON/S", "E-/S"):
            raise DataError(f"{sci_path}: BUNIT {header.get('BUNIT')!r}, expected electrons/s (exp-drc-sci)")
        pivot = header.get("PHOTPLAM")
        if header.get("PHOTFLAM"):
            scale = float(header["PHOTFLAM"])
        elif header.get("PHOTFNU") and pivot:
            scale = float(header["PHOTFNU"]) * 1e-23 * C_AA_PER_S / float(pivot) ** 2
        else:
            raise DataError(f"{sci_path}: neither PHOTFLAM nor PHOTFNU with PHOTPLAM in the header")
        good = np.isfinite(sci) & np.isfinite(wht) & (wht > 0)
        flux = np.where(good, sci * scale, np.nan)
        error = np.where(good, scale / np.sqrt(np.where(good, wht, 1.0)), np.nan)
        return cls(key=key, flux=flux, error=error, wcs=wcs, pivot_aa=float(pivot) if pivot else float("nan"))


class NoOverlap(DataError):
    """An image that does not reach a pixel grid at all."""


def _cutout(
    wcs: WCS, shape: tuple[int, int], target_wcs: WCS, target_shape: tuple[int, int], margin_arcsec: float, where: str
) -> tuple[slice, slice]:
    """Pixel slices of an image (``wcs``, ``shape``) covering a target grid plus a margin."""
    ny, nx = target_shape
    # the target's outline, sampled finely enough for any rotation or distortion
    ty = np.concatenate(
        [np.linspace(-0.5, ny - 0.5, 50), np.full(50, ny - 0.5), np.linspace(-0.5, ny - 0.5, 50), np.full(50, -0.5)]
    )
    tx = np.concatenate(
        [np.full(50, -0.5), np.linspace(-0.5, nx - 0.5, 50), np.full(50, nx - 0.5), np.linspace(-0.5, nx - 0.5, 50)]
    )
    ra, dec = target_wcs.celestial.pixel_to_world_values(tx, ty)
    x, y = wcs.world_to_pixel_values(ra, dec)
    from astropy.wcs.utils import proj_plane_pixel_scales

    margin = margin_arcsec / (np.mean(proj_plane_pixel_scales(wcs)) * 3600.0)
    y0, y1 = int(np.floor(np.nanmin(y) - margin)), int(np.ceil(np.nanmax(y) + margin)) + 1
    x0, x1 = int(np.floor(np.nanmin(x) - margin)), int(np.ceil(np.nanmax(x) + margin)) + 1
    y0, y1, x0, x1 = max(y0, 0), min(y1, shape[0]), max(x0, 0), min(x1, shape[1])
    if y0 >= y1 or x0 >= x1:
        raise NoOverlap(
            f"HST image {where} does not overlap the MUSE cube: check the files of this galaxy in the sample sheet"
        )
    return slice(y0, y1), slice(x0, x1)
