"""Layer ``ssp``: the SSP libraries. Checksummed downloads of any input by source type
(``fetch``, ``fetch_common``, ``fetch_http``, ``fetch_pip``), the readers of the library
formats (``ssp_formats``) and, in this file, the standard SSP library store and its loader
(``sfh_pipeline.ssp`` was this module before the layer folders, and still is). It imports
``core`` only, never torch.

Every SSP source (BC03 FITS grid, pPXF npz, E-MILES FITS files) is converted by
:mod:`sfh_pipeline.ssp.ssp_formats` into one layout, a zarr v3 group under ``resources/ssp/``:

==========================  ==============  ==========================================
array                       shape           meaning
==========================  ==============  ==========================================
``flux``                    (n_Z, n_age, n_wave)  L_sun / A per M_sun formed (float32)
``ages_yr``                 (n_age,)        SSP age in yr
``metallicity_z``           (n_Z,)          metal mass fraction Z
``logzsol``                 (n_Z,)          log10(Z / Z_sun), Z_sun in the ``zsun`` attribute
``wavelength_aa``           (n_wave,)       Angstrom, medium in ``wavelength_medium``
``surviving_mass_fraction`` (n_Z, n_age)    mass still in stars (+ remnants where the
                                            ``mass_definition`` attribute says so) per
                                            unit mass formed
``fwhm_aa``                 (n_wave,)       intrinsic resolution FWHM in Angstrom
==========================  ==============  ==========================================

Attributes hold the provenance: ``name``, ``source`` (the config's source entry),
``sha256`` of the fetched file, ``format``, ``imf``, ``wavelength_medium``, ``zsun``,
``mass_definition``, ``fwhm_note`` and ``code_version``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..core.spectral import broaden_to_fwhm
from ..core.version import __version__

STORE_FORMAT_VERSION = 1
_ARRAYS = (
    "flux",
    "ages_yr",
    "metallicity_z",
    "logzsol",
    "wavelength_aa",
    "surviving_mass_fraction",
    "fwhm_aa",
)


class SSPError(ValueError):
    """An SSP file or store that cannot be used; the message names the file and the fix."""


@dataclasses.dataclass(frozen=True)
class SSPLibrary:
    """A simple-stellar-population grid in the standard layout (see module docstring)."""

    flux: np.ndarray
    ages_yr: np.ndarray
    metallicity_z: np.ndarray
    logzsol: np.ndarray
    wavelength_aa: np.ndarray
    surviving_mass_fraction: np.ndarray
    fwhm_aa: np.ndarray
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n_z, n_age, n_wave = self.flux.shape
        expected = {
            "ages_yr": (n_age,),
            "metallicity_z": (n_z,),
            "logzsol": (n_z,),
            "wavelength_aa": (n_wave,),
            "surviving_mass_fraction": (n_z, n_age),
            "fwhm_aa": (n_wave,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise SSPError(
                    f"SSP array {name!r} has shape {getattr(self, name).shape}, "
                    f"expected {shape} to match flux {self.flux.shape}"
                )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_Z, n_age, n_wave)."""
        return self.flux.shape

    def select(
        self,
        wavelength_range_aa: tuple[float, float] | None = None,
        age_range_yr: tuple[float, float] | None = None,
    ) -> SSPLibrary:
        """Sub-grid covering a wavelength range (Angstrom) and an age range (yr).

        Ages are kept when inside the range (inclusive). Wavelengths are kept inside the
        range plus one pixel beyond each end, so that the range is fully covered.
        """
        wave_sel = slice(None)
        if wavelength_range_aa is not None:
            lo, hi = wavelength_range_aa
            lam = self.wavelength_aa
            if lam[0] > lo or lam[-1] < hi:
                raise SSPError(
                    f"SSP library {self.attrs.get('name', '')!r} covers "
                    f"{lam[0]:.1f}-{lam[-1]:.1f} A, not the requested {lo}-{hi} A: "
                    "choose a library that covers it or narrow ssp.wavelength_range_aa"
                )
            i0 = max(int(np.searchsorted(lam, lo, side="right")) - 1, 0)
            i1 = min(int(np.searchsorted(lam, hi, side="left")) + 1, lam.size)
            wave_sel = slice(i0, i1)
        age_sel = np.ones(self.ages_yr.size, dtype=bool)
        if age_range_yr is not None:
            lo, hi = age_range_yr
            age_sel = (self.ages_yr >= lo * (1 - 1e-9)) & (self.ages_yr <= hi * (1 + 1e-9))
            if not age_sel.any():
                raise SSPError(
                    f"no SSP age in {lo:.3g}-{hi:.3g} yr (library has "
                    f"{self.ages_yr.min():.3g}-{self.ages_yr.max():.3g} yr)"
                )
        return dataclasses.replace(
            self,
            flux=self.flux[:, age_sel, wave_sel],
            ages_yr=self.ages_yr[age_sel],
            wavelength_aa=self.wavelength_aa[wave_sel],
            surviving_mass_fraction=self.surviving_mass_fraction[:, age_sel],
            fwhm_aa=self.fwhm_aa[wave_sel],
        )

    def broadened(self, target_fwhm_aa: np.ndarray | float | Callable[[np.ndarray], np.ndarray]) -> SSPLibrary:
        """The library degraded to a target resolution FWHM in Angstrom.

        ``target_fwhm_aa`` is a scalar, an array per pixel, or a function of wavelength
        (A), e.g. :func:`sfh_pipeline.instrument.muse_lsf_fwhm_aa`.

        Uses the quadrature difference with the library's own ``fwhm_aa``; pixels where
        the library is already coarser than the target are left unchanged, and the
        returned ``fwhm_aa`` records the effective resolution max(intrinsic, target).
        """
        if callable(target_fwhm_aa):
            target_fwhm_aa = target_fwhm_aa(self.wavelength_aa)
        flux, fwhm = broaden_to_fwhm(self.wavelength_aa, self.flux, self.fwhm_aa, target_fwhm_aa)
        return dataclasses.replace(self, flux=flux, fwhm_aa=fwhm)

    def validate(self, where: str = "SSP library") -> None:
        """Raise :class:`SSPError` unless all arrays are finite and fluxes non-negative."""
        for name in _ARRAYS:
            values = getattr(self, name)
            n_bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            if n_bad:
                raise SSPError(
                    f"{where}: {n_bad} non-finite values in {name!r}; "
                    "the source file is corrupt or was converted from a truncated download"
                )
        if np.any(self.flux < 0):
            n_neg = int(np.count_nonzero(self.flux < 0))
            raise SSPError(f"{where}: {n_neg} negative fluxes in the SSP grid")
        if np.any(np.diff(self.wavelength_aa) <= 0) or np.any(np.diff(self.ages_yr) <= 0):
            raise SSPError(f"{where}: wavelengths and ages must be strictly increasing")
        frac = self.surviving_mass_fraction
        if np.any(frac <= 0) or np.any(frac > 1 + 1e-6):
            raise SSPError(f"{where}: surviving mass fractions must lie in (0, 1]")


def write_store(library: SSPLibrary, path: str | os.PathLike) -> Path:
    """Write ``library`` as a zarr v3 store at ``path``, atomically (temp dir + rename).

    The flux array is chunked per metallicity so that a reader of one Z reads one chunk.
    """
    path = Path(path)
    library.validate(where=f"SSP library to be written to {path}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    for name in _ARRAYS:
        values = np.ascontiguousarray(getattr(library, name))
        values = values.astype(np.float32 if name == "flux" else np.float64)
        chunks = (1, *values.shape[1:]) if name == "flux" else values.shape
        array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=chunks)
        array[...] = values
    group.attrs.update({**library.attrs, "store_format_version": STORE_FORMAT_VERSION, "code_version": __version__})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def load_ssp(
    path: str | os.PathLike,
    wavelength_range_aa: tuple[float, float] | None = None,
    age_range_yr: tuple[float, float] | None = None,
) -> SSPLibrary:
    """Load a standard SSP store, optionally cut to a wavelength (A) and age (yr) range.

    The selection is validated (finite, non-negative): a store that fails names itself
    and asks for the ``ssp`` rule to be rerun.
    """
    path = Path(path)
    if not path.exists():
        raise SSPError(f"SSP store {path} does not exist: run `snakemake {path}` (the ssp stage) first")
    try:
        group = zarr.open_group(path, mode="r")
        arrays = {name: np.asarray(group[name][...]) for name in _ARRAYS}
    except KeyError as err:
        raise SSPError(f"SSP store {path} lacks array {err}; delete it and rerun the ssp rule") from err
    library = SSPLibrary(**arrays, attrs=dict(group.attrs))
    library = library.select(wavelength_range_aa, age_range_yr)
    library.validate(where=f"SSP store {path}")
    return library
