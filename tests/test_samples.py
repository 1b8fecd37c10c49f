"""The PHANGS sample sheet: schema, galaxy selection and the input files it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from sfh_pipeline import samples

REPO = Path(__file__).resolve().parents[1]
SHEET = REPO / "config" / "galaxies.tsv"
PHANGS_MUSE = (
    "IC5332 NGC0628 NGC1087 NGC1300 NGC1365 NGC1385 NGC1433 NGC1512 NGC1566 NGC1672 "
    "NGC2835 NGC3351 NGC3627 NGC4254 NGC4303 NGC4321 NGC4535 NGC5068 NGC7496"
).split()


@pytest.fixture(scope="module")
def sheet():
    table = samples.read_sample_sheet(SHEET)
    validate(table, str(REPO / "workflow" / "schemas" / "galaxies.schema.yaml"))
    return table


def test_sheet_has_the_19_phangs_muse_galaxies(sheet):
    assert list(sheet.index) == PHANGS_MUSE
    assert sheet["muse_psf_fwhm_arcsec"].between(0.5, 1.3).all()
    assert sheet["distance_mpc"].between(5.0, 20.0).all()
    for galaxy, row in sheet.iterrows():
        assert row["muse_cube"] == f"{galaxy}_PHANGS_DATACUBE_copt_{row['muse_psf_fwhm_arcsec']:.2f}asec.fits"
        assert len(samples.hst_band_keys(row)) == 5


def test_f435w_galaxies_use_acs(sheet):
    for galaxy in ("NGC0628", "NGC1300", "NGC1672"):
        assert "acs-wfc_f435w" in samples.hst_band_keys(sheet.loc[galaxy])
    assert "wfc3-uvis_f438w" in samples.hst_band_keys(sheet.loc["NGC3627"])


def test_band_keys_are_known_filters(sheet):
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    known = set(schema["properties"]["filters"]["items"]["enum"])
    for _, row in sheet.iterrows():
        assert set(samples.hst_band_keys(row)) <= known


def test_select_galaxies(sheet):
    assert samples.select_galaxies(sheet, None) == PHANGS_MUSE
    assert samples.select_galaxies(sheet, "all") == PHANGS_MUSE
    assert samples.select_galaxies(sheet, "NGC3627, NGC0628") == ["NGC3627", "NGC0628"]
    with pytest.raises(ValueError, match=r"NGC9999.*not in the sample sheet.*NGC3627"):
        samples.select_galaxies(sheet, ["NGC9999"])


def test_input_files_follow_phangs_names_and_missing_ones_are_listed(sheet, tmp_path):
    files = samples.galaxy_input_files(sheet.loc["NGC0628"], tmp_path / "muse", tmp_path / "hst")
    assert files["acs-wfc_f435w_sci"].name == "hlsp_phangs-hst_hst_acs-wfc_ngc628mosaic_f435w_v1_exp-drc-sci.fits"
    assert files["wfc3-uvis_f275w_wht"].name == "hlsp_phangs-hst_hst_wfc3-uvis_ngc628mosaic_f275w_v1_err-drc-wht.fits"
    for path in files.values():
        path.parent.mkdir(exist_ok=True)
        path.touch()
    files["muse_cube"].unlink()
    missing = samples.missing_input_files(sheet, ["NGC0628", "NGC3627"], tmp_path / "muse", tmp_path / "hst")
    assert missing["NGC0628"] == [files["muse_cube"]]
    assert len(missing["NGC3627"]) == 11
    message = samples.describe_missing(missing, "m", "h")
    assert "NGC0628_PHANGS_DATACUBE_copt_0.92asec.fits" in message and "sample.muse_dir" in message


def test_duplicate_galaxy_rejected(tmp_path):
    bad = tmp_path / "sheet.tsv"
    lines = SHEET.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(ValueError, match="twice"):
        samples.read_sample_sheet(bad)


def test_require_columns_names_the_empty_one():
    from sfh_pipeline.samples import require_columns

    row = {"galaxy": "NGC3627", "distance_mpc": 11.32, "ebv_galactic": float("nan"), "systemic_velocity_kms": None}
    assert require_columns(row, ("distance_mpc",)) == (11.32,)
    with pytest.raises(ValueError, match="'ebv_galactic'"):
        require_columns(row, ("distance_mpc", "ebv_galactic"))
    with pytest.raises(ValueError, match="'systemic_velocity_kms'"):
        require_columns(row, ("systemic_velocity_kms",))


def test_default_sheet_names_a_real_spectrum_only_galaxy(tmp_path, monkeypatch):
    """The embedded default's real galaxy: a cube path with a folder, no HST bands, and the cube
    is fetched by the workflow (config downloads), so it is not reported missing."""
    monkeypatch.chdir(tmp_path)  # a working directory without the fetched cube
    default = samples.read_sample_sheet(REPO / "config" / "default_galaxies.tsv")
    validate(default, str(REPO / "workflow" / "schemas" / "galaxies.schema.yaml"))
    row = default.loc["A478"]
    assert samples.hst_band_keys(row) == []
    files = samples.galaxy_input_files(row, tmp_path / "muse", tmp_path / "hst")
    assert files == {"muse_cube": Path("resources/real/A478/minicube.fits")}
    assert samples.galaxy_input_files(default.loc["MOCK-UVIS"], "m", "h")["muse_cube"] == Path(
        "m/MOCK-UVIS_PHANGS_DATACUBE_copt_0.90asec.fits"
    )
    downloads = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["downloads"]
    assert samples.missing_input_files(default, ["A478"], "m", "h", downloaded=downloads) == {}
    assert samples.missing_input_files(default, ["A478"], "m", "h") == {"A478": [files["muse_cube"]]}


def test_a_row_handed_to_a_job_does_not_depend_on_the_other_rows(tmp_path):
    """The row a job gets is its parameter: filling another galaxy's empty cell (which turns the
    column from float to int in pandas) must leave it unchanged, and the job gets back NaN."""
    header = "galaxy\tdistance_mpc\ttarget_snr\n"
    (tmp_path / "a.tsv").write_text(header + "A\t10.5\t20\nB\t12\t\n")
    (tmp_path / "b.tsv").write_text(header + "A\t10.5\t20\nB\t12\t25\n")
    before, after = (samples.read_sample_sheet(tmp_path / name) for name in ("a.tsv", "b.tsv"))
    assert after["target_snr"].dtype.kind == "i"  # the reason for the test
    record = samples.row_record(before.loc["A"])
    assert record == samples.row_record(after.loc["A"]) == {"galaxy": "A", "distance_mpc": 10.5, "target_snr": 20.0}
    assert samples.row_record(before.loc["B"])["target_snr"] is None
    back = samples.row_from_record(samples.row_record(before.loc["B"]))
    assert back["distance_mpc"] == 12.0 and back["target_snr"] != back["target_snr"]
    assert samples.row_record(after.loc["B"], ("galaxy", "target_snr", "ra_deg")) == {
        "galaxy": "B",
        "target_snr": 25.0,
        "ra_deg": None,
    }
