"""The galaxy sample sheet: reading, selecting galaxies and locating their input files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

#: PHANGS-HST HLSP file name; ``kind`` is ``exp-drc-sci`` (e-/s) or ``err-drc-wht`` (inverse variance).
HST_FILE_PATTERN = "hlsp_phangs-hst_hst_{instrument}_{target}_{filter}_v1_{kind}.fits"


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read the tab-separated sample sheet, indexed by ``galaxy`` (names unique)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"sample sheet {path} does not exist (config key sample.sheet)")
    sheet = pd.read_csv(path, sep="\t", dtype={"galaxy": str, "hst_target": str, "hst_bands": str})
    if "galaxy" not in sheet.columns:
        raise ValueError(f"sample sheet {path} has no 'galaxy' column (columns: {list(sheet.columns)})")
    duplicated = sheet["galaxy"][sheet["galaxy"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"sample sheet {path}: galaxy names appear twice: {duplicated}")
    return sheet.set_index("galaxy", drop=False)


def select_galaxies(sheet: pd.DataFrame, requested: str | list[str] | None, sheet_path: str = "") -> list[str]:
    """Galaxies to process: ``requested`` as a list or comma-separated string; all if empty/"all".

    An unknown name is an error that lists the names the sheet has.
    """
    if requested is None or requested == "all" or requested == []:
        return list(sheet.index)
    names = [n.strip() for n in requested.split(",")] if isinstance(requested, str) else list(requested)
    unknown = [n for n in names if n not in sheet.index]
    if unknown:
        raise ValueError(
            f"galaxies {unknown} are not in the sample sheet {sheet_path}; it has: {', '.join(sheet.index)}"
        )
    return names


#: The sheet columns the jobs up to the tiles read (the files named by ``muse_cube`` and
#: ``hst_target`` reach them as paths). Every other job gets the whole row. A job reruns when a
#: cell it gets changes, so an edited E(B-V) redoes the tiles and maps but not the binning.
HST_JOB_COLUMNS = ("galaxy", "muse_psf_fwhm_arcsec", "hst_bands")
#: The numeric columns a mock galaxy is made from (with its name and, for its HST images, ``hst_bands``).
MOCK_GALAXY_COLUMNS = (
    "galaxy",
    "muse_psf_fwhm_arcsec",
    "distance_mpc",
    "systemic_velocity_kms",
    "ra_deg",
    "dec_deg",
    "inclination_deg",
    "position_angle_deg",
    "ebv_galactic",
)
MOCK_JOB_COLUMNS = (*MOCK_GALAXY_COLUMNS, "hst_bands")
BINNING_JOB_COLUMNS = ("galaxy", "systemic_velocity_kms", "target_snr")
#: What :func:`sfh_pipeline.infer.infer_tile` reads (``velocity_range_kms`` may be empty).
INFER_JOB_COLUMNS = ("galaxy", "systemic_velocity_kms", "ebv_galactic", "distance_mpc", "velocity_range_kms")


def row_record(row: pd.Series, columns: tuple[str, ...] | None = None) -> dict:
    """A sheet row (or its ``columns``) as a JSON-ready dict, empty cells as None.

    The workflow hands it to a job as a parameter, so that editing a galaxy's row reruns that
    galaxy's jobs and no others.
    """
    cells = row if columns is None else {c: row.get(c) for c in columns}
    return {str(k): _cell_value(v) for k, v in cells.items()}


def _cell_value(value):
    """A cell as JSON: numbers as float whatever type pandas gave their column (it reads a column
    without empty cells as integers, so filling the last empty cell must not change the others)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return None if value != value else float(value)
    return value


def row_from_record(record: dict) -> dict:
    """The inverse of :func:`row_record`: empty cells back as NaN, as ``read_sample_sheet`` gives them."""
    return {k: float("nan") if v is None else v for k, v in record.items()}


def hst_band_keys(row: pd.Series) -> list[str]:
    """The ``<instrument>_<filter>`` keys of a sheet row, e.g. ``['wfc3-uvis_f275w', ...]``;
    none for an empty cell (spectrum-only galaxies)."""
    bands = row.get("hst_bands")
    if not isinstance(bands, str):
        return []
    return [key.strip() for key in bands.split(",") if key.strip()]


def muse_cube_path(row: pd.Series, muse_dir: str | os.PathLike) -> Path:
    """The MUSE cube of a sheet row: a bare file name lies in ``muse_dir``; a name with a folder
    (``resources/real/A478/minicube.fits``) or an absolute path is used as given, for cubes
    not named like PHANGS-MUSE DR1."""
    name = Path(str(row["muse_cube"]))
    return name if name.is_absolute() or name.parent != Path(".") else Path(muse_dir) / name


def galaxy_input_files(row: pd.Series, muse_dir: str | os.PathLike, hst_dir: str | os.PathLike) -> dict[str, Path]:
    """Input files of one galaxy: ``muse_cube`` and ``<band>_sci`` / ``<band>_wht`` per HST band."""
    files = {"muse_cube": muse_cube_path(row, muse_dir)}
    for key in hst_band_keys(row):
        instrument, filt = key.split("_")
        for kind, suffix in (("exp-drc-sci", "sci"), ("err-drc-wht", "wht")):
            name = HST_FILE_PATTERN.format(instrument=instrument, target=row["hst_target"], filter=filt, kind=kind)
            files[f"{key}_{suffix}"] = Path(hst_dir) / name
    return files


def missing_input_files(
    sheet: pd.DataFrame,
    galaxies: list[str],
    muse_dir: str | os.PathLike,
    hst_dir: str | os.PathLike,
    downloaded=(),
) -> dict[str, list[Path]]:
    """Per galaxy, the input files that do not exist and are not among the paths ``downloaded``
    by the workflow (galaxies with none missing are left out)."""
    fetched = {Path(p) for p in downloaded}
    missing = {}
    for galaxy in galaxies:
        absent = [
            p
            for p in galaxy_input_files(sheet.loc[galaxy], muse_dir, hst_dir).values()
            if not p.exists() and p not in fetched
        ]
        if absent:
            missing[galaxy] = absent
    return missing


def describe_missing(missing: dict[str, list[Path]], muse_dir: str, hst_dir: str) -> str:
    """A message naming the missing files (one galaxy per line) and where to put them."""
    lines = [
        f"Input data missing for {len(missing)} galaxies: put the PHANGS-MUSE DR1 cubes in "
        f"{muse_dir}/ and the PHANGS-HST images in {hst_dir}/ (config keys sample.muse_dir, "
        "sample.hst_dir), or select galaxies with --config galaxies=NAME,... Missing:"
    ]
    for galaxy, paths in missing.items():
        lines.append(f"  {galaxy}: " + " ".join(p.name for p in paths))
    return "\n".join(lines)


def mosaics(sheet: pd.DataFrame, galaxies: list[str]) -> dict[str, list[str]]:
    """``{mosaic name: [pointing, ...]}`` of the selected rows whose ``mosaic`` column is set
    (sheet order); a mosaic name that is also a galaxy name is an error."""
    if "mosaic" not in sheet.columns:
        return {}
    groups: dict[str, list[str]] = {}
    for galaxy in galaxies:
        name = sheet.loc[galaxy, "mosaic"]
        if isinstance(name, str) and name.strip():
            groups.setdefault(name.strip(), []).append(galaxy)
    clash = sorted(set(groups) & set(sheet.index))
    if clash:
        raise ValueError(f"sample sheet: mosaic names {clash} are also galaxy names; rename the mosaics")
    return groups


def require_columns(row, columns: tuple[str, ...]) -> tuple[float, ...]:
    """The numeric values of ``columns`` in a sheet row; an empty one is an error naming it."""
    values = []
    for column in columns:
        value = row.get(column)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):
            raise ValueError(
                f"galaxy {row.get('galaxy')}: column {column!r} of the sample sheet is empty or not a "
                "number; fill it in (see docs/phangs_sample.md)"
            )
        values.append(value)
    return tuple(values)
