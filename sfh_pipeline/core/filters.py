"""HST total-system throughputs for the PHANGS-HST bands, and vectorised synthetic photometry.

The curves are read at run time from the EAZY-format ``FILTER.RES.txt`` shipped
inside the installed ppxf wheel (``ppxf/examples/FILTER.RES.txt``); nothing is
copied into this repository.

Conventions
-----------
* Wavelengths are in Angstrom (vacuum/air as in the source file; irrelevant at
  the precision of broad-band photometry).
* Throughputs are dimensionless total-system response per photon; their
  normalisation does not matter for any quantity computed here.
* Synthetic photometry uses the photon-counting convention
  (e.g. Bessell & Murphy 2012, PASP 124, 140; Cappellari 2023, MNRAS 526, 3273)::

      <f_lambda> = int f_lambda T lambda dlambda / int T lambda dlambda
      <f_nu>     = int f_lambda T lambda dlambda / int T (c / lambda) dlambda

  so that ``<f_nu> = <f_lambda> * lambda_pivot**2 / c``.
* AB magnitudes are ``-2.5 log10(<f_nu> / 3631 Jy)`` (the zero point that ppxf
  also uses; it differs from ``-2.5 log10 f_nu - 48.60`` by 2e-5 mag).
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import C_AA_PER_S

#: AB zero point: 3631 Jy in erg s^-1 cm^-2 Hz^-1.
AB_ZEROPOINT_FNU_CGS = 3631e-23

#: The eight HST bands used by PHANGS-HST, in this order: filter key -> name token of its
#: header line in ppxf's ``FILTER.RES.txt``. The keys match the PHANGS-HST file names
#: ``hlsp_phangs-hst_hst_<wfc3-uvis|acs-wfc>_<target>_<filter>_v1_exp-drc-sci.fits``.
#: A header matches when this token is one of its whitespace-separated words,
#: and exactly one header must match.
#:
#: * WFC3/UVIS: the file holds one total-system curve per band
#:   (``hst/wfc3/UVIS/<filter>.dat``); the WFPC2 curves of the same names
#:   (``hst/wfpc2_f336w.dat`` ...) are a different camera and are not used.
#: * ACS/WFC: the file holds two versions of each curve, ``_t77`` for
#:   exposures taken before 2006-07-04 (CCDs at -77 C) and ``_t81`` for those
#:   taken after the CCDs were cooled to -81 C. We use ``_t81``, the curve for
#:   the current operating temperature. Pre-2006 archival ACS frames would
#:   strictly need ``_t77``, but for F435W/F555W/F814W the two versions differ
#:   by at most 3 A in pivot wavelength and 0.001 mag in AB-Vega, according to
#:   ``FILTER.RES.info.txt``.
FILTER_RES_HEADERS = {
    "wfc3-uvis_f275w": "hst/wfc3/UVIS/f275w.dat",
    "wfc3-uvis_f336w": "hst/wfc3/UVIS/f336w.dat",
    "wfc3-uvis_f438w": "hst/wfc3/UVIS/f438w.dat",
    "wfc3-uvis_f555w": "hst/wfc3/UVIS/f555w.dat",
    "wfc3-uvis_f814w": "hst/wfc3/UVIS/f814w.dat",
    "acs-wfc_f435w": "hst/ACS_update_sep07/wfc_f435w_t81.dat",
    "acs-wfc_f555w": "hst/ACS_update_sep07/wfc_f555w_t81.dat",
    "acs-wfc_f814w": "hst/ACS_update_sep07/wfc_f814w_t81.dat",
}
#: Keys of the eight bands, in order. The config schema (workflow/schemas/config.schema.yaml)
#: cannot import them and spells them again; tests/test_filters.py holds the two together.
PHANGS_FILTERS = tuple(FILTER_RES_HEADERS)


@dataclass(frozen=True, eq=False)
class Throughput:
    """One filter's total-system throughput curve.

    Attributes
    ----------
    key : str
        Filter key, e.g. ``"wfc3-uvis_f275w"``.
    wavelength_aa : numpy.ndarray
        Wavelengths in Angstrom, strictly increasing (read-only array).
    throughput : numpy.ndarray
        Dimensionless throughput per photon at ``wavelength_aa`` (read-only array).
    source : str
        Where the curve came from: the file name and its header line.
    """

    key: str
    wavelength_aa: np.ndarray
    throughput: np.ndarray
    source: str

    @property
    def pivot_wavelength_aa(self) -> float:
        """Pivot wavelength in Angstrom, sqrt(int T lambda dlambda / int T / lambda dlambda)."""
        lam, t = self.wavelength_aa, self.throughput
        return float(np.sqrt(np.trapezoid(t * lam, lam) / np.trapezoid(t / lam, lam)))

    def support_aa(self) -> tuple[float, float]:
        """Wavelength interval in Angstrom outside which the linearly interpolated curve is zero."""
        (nonzero,) = np.nonzero(self.throughput > 0)
        lo = max(nonzero[0] - 1, 0)
        hi = min(nonzero[-1] + 1, self.wavelength_aa.size - 1)
        return float(self.wavelength_aa[lo]), float(self.wavelength_aa[hi])


def filter_res_path() -> Path:
    """Path of ``FILTER.RES.txt`` inside the installed ppxf package.

    Raises
    ------
    ModuleNotFoundError
        If ppxf is not installed.
    FileNotFoundError
        If the installed ppxf does not ship ``examples/FILTER.RES.txt``.
    """
    if importlib.util.find_spec("ppxf") is None:
        raise ModuleNotFoundError("ppxf is not installed; it provides examples/FILTER.RES.txt")
    path = Path(str(importlib.resources.files("ppxf") / "examples" / "FILTER.RES.txt"))
    if not path.is_file():
        raise FileNotFoundError(f"filter file not found in the installed ppxf: {path}")
    return path


@functools.lru_cache(maxsize=4)
def _parse_filter_res(path: str) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """All curves in an EAZY ``FILTER.RES`` file as (header, wavelength, throughput) tuples.

    Each block is a header line ``N  description...`` followed by N rows
    ``index wavelength throughput``. Blank lines and ``#`` comment lines
    between blocks are skipped.
    """
    lines = Path(path).read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if not lines[i].strip() or lines[i].lstrip().startswith("#"):  # blank or comment
            i += 1
            continue
        count, _, description = lines[i].strip().partition(" ")
        try:
            n = int(count)
            rows = np.array(" ".join(lines[i + 1 : i + 1 + n]).split(), dtype=float).reshape(n, 3)
        except ValueError as err:
            raise ValueError(f"{path}, line {i + 1}: not an EAZY filter block ({err})") from None
        wave, thr = rows[:, 1], rows[:, 2]
        wave.flags.writeable = thr.flags.writeable = False
        blocks.append((description.strip(), wave, thr))
        i += 1 + n
    return tuple(blocks)


def load_throughputs(
    keys: Sequence[str] = PHANGS_FILTERS, path: str | os.PathLike | None = None
) -> dict[str, Throughput]:
    """Load total-system throughput curves.

    Parameters
    ----------
    keys : sequence of str
        Filter keys from :data:`FILTER_RES_HEADERS`; default all of :data:`PHANGS_FILTERS`.
    path : path-like, optional
        EAZY-format filter file; default :func:`filter_res_path`. The file is
        parsed once per path and cached.

    Returns
    -------
    dict of str to Throughput
        In the order of ``keys``; wavelengths in Angstrom.

    Raises
    ------
    KeyError
        If a key has no entry in :data:`FILTER_RES_HEADERS`.
    ValueError
        If the file has no header, or more than one, for a key, or a curve is malformed.
    """
    path = Path(path) if path is not None else filter_res_path()
    blocks = _parse_filter_res(str(path.resolve()))
    out = {}
    for key in keys:
        if key not in FILTER_RES_HEADERS:
            raise ValueError(f"unknown filter key {key!r} (config key filters); known: {sorted(FILTER_RES_HEADERS)}")
        token = FILTER_RES_HEADERS[key]
        matches = [b for b in blocks if token in b[0].split()]
        if len(matches) != 1:
            what = "no header" if not matches else f"{len(matches)} headers"
            raise ValueError(f"{path}: {what} containing {token!r} (filter {key!r})")
        description, wave, thr = matches[0]
        if np.any(np.diff(wave) <= 0) or np.any(~np.isfinite(thr)) or np.any(thr < 0):
            raise ValueError(f"{path}: curve {token!r} is not increasing, finite and non-negative")
        if not np.any(thr > 0):
            raise ValueError(f"{path}: curve {token!r} is zero everywhere")
        out[key] = Throughput(key, wave, thr, f"{path.name}: {description}")
    return out


def ab_magnitude(fnu_cgs: np.ndarray) -> np.ndarray:
    """AB magnitude of a flux density.

    Parameters
    ----------
    fnu_cgs : array_like
        Flux density in erg s^-1 cm^-2 Hz^-1.

    Returns
    -------
    numpy.ndarray
        ``-2.5 log10(fnu / 3631 Jy)``; NaN where ``fnu <= 0`` or is not finite.
    """
    fnu = np.asarray(fnu_cgs, dtype=float)
    ok = np.isfinite(fnu) & (fnu > 0)
    return np.where(ok, -2.5 * np.log10(np.where(ok, fnu, 1.0) / AB_ZEROPOINT_FNU_CGS), np.nan)


class PhotometryOperator:
    """Synthetic photometry of many spectra on one wavelength grid, as a matrix product.

    Built once per (wavelength grid, filters); each call is ``flux @ W`` with a
    precomputed ``(n_wave, n_filters)`` weight matrix: trapezoid weights on the
    spectrum's own grid times the throughput linearly interpolated onto it
    (zero outside the curve).

    Parameters
    ----------
    wave_aa : array_like, shape (n_wave,)
        Wavelengths of the spectra in Angstrom, strictly increasing.
    throughputs : Throughput, or iterable or mapping of Throughput
        Filters; output columns follow this order.

    Raises
    ------
    ValueError
        If the grid is not 1-D, finite and increasing, or if a filter curve
        (where non-zero) is not fully inside ``[wave_aa[0], wave_aa[-1]]``.
    """

    def __init__(
        self,
        wave_aa: np.ndarray,
        throughputs: Throughput | Iterable[Throughput] | Mapping[str, Throughput],
    ):
        lam = np.asarray(wave_aa, dtype=float)
        if lam.ndim != 1 or lam.size < 2 or not np.all(np.isfinite(lam)) or np.any(np.diff(lam) <= 0):
            raise ValueError("wave_aa must be a 1-D, finite, strictly increasing array of >= 2 wavelengths")
        if isinstance(throughputs, Throughput):
            throughputs = [throughputs]
        elif isinstance(throughputs, Mapping):
            throughputs = throughputs.values()
        self.throughputs = tuple(throughputs)
        self.keys = tuple(t.key for t in self.throughputs)
        self.wave_aa = lam

        dlam = np.empty_like(lam)  # trapezoid weights: half the span to the two neighbours
        dlam[1:-1] = (lam[2:] - lam[:-2]) / 2
        dlam[0], dlam[-1] = (lam[1] - lam[0]) / 2, (lam[-1] - lam[-2]) / 2
        photon = np.empty((lam.size, len(self.throughputs)))
        per_nu = np.empty(len(self.throughputs))
        for j, t in enumerate(self.throughputs):
            lo, hi = t.support_aa()
            if lo < lam[0] or hi > lam[-1]:
                raise ValueError(
                    f"filter {t.key!r} spans {lo:.1f}-{hi:.1f} A but the spectrum covers only "
                    f"{lam[0]:.1f}-{lam[-1]:.1f} A"
                )
            tw = np.interp(lam, t.wavelength_aa, t.throughput, left=0.0, right=0.0) * dlam
            photon[:, j] = tw * lam  # T lambda dlambda
            per_nu[j] = C_AA_PER_S * np.sum(tw / lam)  # int T c / lambda dlambda
        self._w_flambda = photon / photon.sum(axis=0)
        self._w_fnu = photon / per_nu
        #: Pivot wavelengths in Angstrom, computed on the spectrum grid.
        self.pivot_wavelength_aa = np.sqrt(C_AA_PER_S * photon.sum(axis=0) / per_nu)

    @property
    def mean_flambda_weights(self) -> np.ndarray:
        """(n_wave, n_filters) matrix W with ``mean_flambda(flux) == flux @ W``."""
        return self._w_flambda

    def _apply(self, flux: np.ndarray, weights: np.ndarray) -> np.ndarray:
        flux = np.asarray(flux, dtype=float)
        if flux.ndim == 0 or flux.shape[-1] != self.wave_aa.size:
            raise ValueError(f"flux must have shape (..., {self.wave_aa.size}), got {flux.shape}")
        return flux @ weights

    def mean_flambda(self, flux: np.ndarray) -> np.ndarray:
        """Photon-weighted mean f_lambda in each band.

        Parameters
        ----------
        flux : array_like, shape (..., n_wave)
            f_lambda in any unit per Angstrom (e.g. erg s^-1 cm^-2 A^-1).

        Returns
        -------
        numpy.ndarray, shape (..., n_filters)
            ``int f T lambda dlambda / int T lambda dlambda``, same unit as ``flux``.
        """
        return self._apply(flux, self._w_flambda)

    def fnu(self, flux: np.ndarray) -> np.ndarray:
        """Photon-weighted mean f_nu in each band.

        Parameters
        ----------
        flux : array_like, shape (..., n_wave)
            f_lambda in erg s^-1 cm^-2 A^-1.

        Returns
        -------
        numpy.ndarray, shape (..., n_filters)
            ``int f T lambda dlambda / int T (c / lambda) dlambda`` in
            erg s^-1 cm^-2 Hz^-1 (c in A/s). Other f_lambda units scale the
            result by the same factor per Angstrom -> per Hz.
        """
        return self._apply(flux, self._w_fnu)

    def ab_mag(self, flux: np.ndarray) -> np.ndarray:
        """AB magnitudes in each band of f_lambda spectra in erg s^-1 cm^-2 A^-1.

        Returns
        -------
        numpy.ndarray, shape (..., n_filters)
            NaN where the band flux is not positive.
        """
        return ab_magnitude(self.fnu(flux))


def write_throughput_table(
    path: str | os.PathLike, throughputs: Mapping[str, Throughput] | Iterable[Throughput]
) -> None:
    """Write throughput curves to one FITS file, atomically.

    One binary-table HDU per filter, ``EXTNAME`` = key upper-cased, columns
    ``WAVELENGTH`` (Angstrom) and ``THROUGHPUT`` (dimensionless), header
    cards ``FILTER`` (key), ``PIVOT`` (pivot wavelength, Angstrom) and
    ``SOURCE``. The file is written to a temporary file in the same directory
    and then renamed over ``path``.
    """
    from astropy.io import fits

    if isinstance(throughputs, Mapping):
        throughputs = throughputs.values()
    hdus = [fits.PrimaryHDU()]
    for t in throughputs:
        cols = [
            fits.Column(name="WAVELENGTH", format="D", unit="Angstrom", array=t.wavelength_aa),
            fits.Column(name="THROUGHPUT", format="D", array=t.throughput),
        ]
        hdu = fits.BinTableHDU.from_columns(cols, name=t.key.upper())
        hdu.header["FILTER"] = (t.key, "filter key")
        hdu.header["PIVOT"] = (t.pivot_wavelength_aa, "[Angstrom] pivot wavelength")
        hdu.header["SOURCE"] = t.source
        hdus.append(hdu)

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
    os.close(fd)
    try:
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_throughput_table(path: str | os.PathLike) -> dict[str, Throughput]:
    """Read a file written by :func:`write_throughput_table` back into ``{key: Throughput}``."""
    from astropy.io import fits

    out = {}
    with fits.open(path) as hdul:
        for hdu in hdul[1:]:
            key = hdu.header.get("FILTER", hdu.name.lower())
            wave = np.array(hdu.data["WAVELENGTH"], dtype=float)
            thr = np.array(hdu.data["THROUGHPUT"], dtype=float)
            wave.flags.writeable = thr.flags.writeable = False
            out[key] = Throughput(key, wave, thr, str(hdu.header.get("SOURCE", "")))
    return out


def reference_filter_info(path: str | os.PathLike | None = None) -> dict[str, tuple[float, float]]:
    """``FILTER.RES.info.txt`` beside the curves, as {header name: (lambda_c [A], AB-Vega [mag])}.

    Lines look like ``208   346 hst/wfc3/UVIS/f275w.dat lambda_c= 2.7086e+03 AB-Vega= 1.501 ...``;
    ``lambda_c`` is EAZY's pivot wavelength. Entries without a numeric AB-Vega are skipped.
    """
    import re

    path = Path(path) if path is not None else filter_res_path().with_name("FILTER.RES.info.txt")
    out = {}
    for line in path.read_text().splitlines():
        match = re.search(r"lambda_c=\s*([-+.0-9eE]+)\s+AB-Vega=\s*([-+.0-9]+)", line)
        if match and not line.lstrip().startswith("#"):
            out[line.split()[2]] = (float(match[1]), float(match[2]))
    return out


def vega_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """Vega from ppxf's ``sps_models/spectra_sun_vega.npz``: (wavelength [A], f_lambda [erg s^-1 cm^-2 A^-1])."""
    path = filter_res_path().parent.parent / "sps_models" / "spectra_sun_vega.npz"
    with np.load(path) as data:
        return np.asarray(data["lam"], dtype=float), np.asarray(data["flux_vega"], dtype=float)


def write_filter_products(keys: Sequence[str], table_path: str | os.PathLike, check_path: str | os.PathLike) -> dict:
    """Write the throughput table of ``keys`` and a JSON check against FILTER.RES.info.txt.

    The check lists per filter the pivot wavelength (A) and the AB-Vega offset (mag)
    computed here from ppxf's Vega spectrum, next to the values listed by EAZY.
    """
    throughputs = load_throughputs(tuple(keys))
    reference = reference_filter_info()
    lam, vega = vega_spectrum()
    ab_vega = PhotometryOperator(lam, throughputs).ab_mag(vega)
    check = {}
    for key, ab in zip(throughputs, ab_vega):
        lambda_c, ref_ab_vega = reference[FILTER_RES_HEADERS[key]]
        check[key] = {
            "source": FILTER_RES_HEADERS[key],
            "pivot_aa": round(throughputs[key].pivot_wavelength_aa, 3),
            "reference_pivot_aa": lambda_c,
            "ab_minus_vega_mag": round(float(ab), 4),
            "reference_ab_minus_vega_mag": ref_ab_vega,
        }
    from .atomic import write_json_atomically

    Path(table_path).parent.mkdir(parents=True, exist_ok=True)
    write_throughput_table(table_path, throughputs)
    write_json_atomically(check_path, check)
    return check
