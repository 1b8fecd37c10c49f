"""A small mock galaxy (the MOCK-ACS row of the default sheet) written in the PHANGS layouts, for tests."""

from __future__ import annotations

from pathlib import Path

from sfh_pipeline.forward import DEFAULT_AGE_BIN_EDGES_YR
from sfh_pipeline.mock import write_mock_galaxy
from sfh_pipeline.samples import galaxy_input_files, hst_band_keys, read_sample_sheet

SHEET = Path(__file__).resolve().parents[2] / "config" / "default_galaxies.tsv"
SIZE = [20, 20]
UNCOVERED = "acs-wfc_f435w"


def write(root: Path, ssp_store, seed: int = 11, **extra):
    """MOCK-ACS at SIZE spaxels, band UNCOVERED partly uncovered, under ``root``:
    (sheet row, input files, HST bands, recipe, write_mock_galaxy's summary)."""
    row = read_sample_sheet(SHEET).loc["MOCK-ACS"]
    files = galaxy_input_files(row, root / "muse", root / "hst")
    bands = hst_band_keys(row)
    recipe = {"seed": seed, "size_spaxels": SIZE, "uncovered_band": UNCOVERED, **extra}
    summary = write_mock_galaxy(
        row.to_dict(),
        recipe,
        ssp_store,
        DEFAULT_AGE_BIN_EDGES_YR,
        bands,
        files["muse_cube"],
        {b: (files[f"{b}_sci"], files[f"{b}_wht"]) for b in bands},
        root / "truth.fits",
    )
    return row, files, bands, recipe, summary
