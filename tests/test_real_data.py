"""The shipped default network on every real spectrum and bin of the embedded default (the real
MUSE cube A478, three SDSS fibres, eight MaNGA spaxels) against full spectral fitting.

The bounds are the goals for real data, written here before the figures were measured: a model
that misses one is not shipped as the default, or its miss is stated in its card and README.
A goal not met yet is a strict xfail that states the measured figure, so that a model reaching
it turns the xfail into a failure, to be promoted to a pass. Bounds are never widened to let a
training through.

The figures are those of the validate stages' run that shipped the model
(``models/<default>/real_data/summary.json``, written by ``sfh-pipeline validate-summary``:
every bin and spectrum with the network's values, the reference's and its envelope). They are
recomputed here from those rows, and the network's answers on the SDSS and MaNGA spectra are
recomputed from the real files, so that a change of the predictor that moves them fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import yaml

from .support.workflow import REPO

DEFAULT = yaml.safe_load((REPO / "config" / "phangs.yaml").read_text())["model"]["pretrained"]
CATALOG = yaml.safe_load((REPO / "models" / "catalog.yaml").read_text())
SUMMARY = REPO / "models" / DEFAULT / "real_data" / "summary.json"

# The goals over all real spectra and bins together (network - BC03 regularised full-grid pPXF);
# the median difference holds in every set.
MAX_ABS_MEDIAN_DELTA_DEX = 0.10
MAX_SCATTER_DEX = 0.12
WITHIN_1SIGMA = (0.60, 0.80)  # errors neither too small nor too large
MIN_WITHIN_ENVELOPE = 0.85
YOUNG_LW_AGE = 9.2  # reference LW log age below which a spectrum counts as young
MAX_YOUNG_ABS_DELTA_LW_AGE_DEX = 0.25  # every young spectrum
MIN_SPEARMAN_RHO = {"lw_age": 0.9, "lw_logz": 0.8}
QUANTITIES = ("lw_age", "lw_logz")


def unmet(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"goal not met by the shipped default: {reason}")


@pytest.fixture(scope="module")
def rows():
    summary = json.loads(SUMMARY.read_text())
    assert set(summary["sets"]) == {"A478", "spectra", "manga"} and summary["n"] == len(summary["rows"]) >= 18
    return summary["rows"]


def columns(rows, part, key):
    return np.array([row[part][key] for row in rows], float)


def delta(rows, key):
    return columns(rows, "network", key) - columns(rows, "reference", key)


def test_the_summary_is_of_the_shipped_default_and_holds_what_it_says():
    """Every set's agreement file beside the summary names the catalogued file of the default,
    and the summary's figures are those of its rows."""
    summary = json.loads(SUMMARY.read_text())
    for name in summary["sets"]:
        agreement = json.loads((SUMMARY.parent / f"{name}.json").read_text())
        assert Path(agreement["model"]).name == Path(CATALOG[DEFAULT]["path"]).name
    for key in QUANTITIES:
        d = delta(summary["rows"], key)
        assert summary[key]["median_delta_dex"] == pytest.approx(np.median(d), abs=1e-9)
        assert summary[key]["n"] == np.isfinite(d).sum()


@pytest.mark.parametrize(
    ("real_set", "key"),
    [
        pytest.param(
            real_set,
            key,
            marks=unmet("LW age median difference -0.13 dex over the 3 SDSS spectra")
            if (real_set, key) == ("spectra", "lw_age")
            else (),
        )
        for real_set in ("A478", "spectra", "manga")
        for key in QUANTITIES
    ],
)
def test_median_difference_of_every_set(rows, real_set, key):
    assert abs(np.nanmedian(delta([row for row in rows if row["set"] == real_set], key))) <= MAX_ABS_MEDIAN_DELTA_DEX


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("lw_age", marks=unmet("LW age scatter 0.179 dex over the 18 real spectra and bins")),
        pytest.param("lw_logz"),
    ],
)
def test_scatter(rows, key):
    d = delta(rows, key)
    d = d[np.isfinite(d)]
    assert 1.4826 * np.median(np.abs(d - np.median(d))) <= MAX_SCATTER_DEX


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("lw_age", marks=unmet("LW age within 1 sigma for 89 % of them: errors too large")),
        pytest.param("lw_logz"),
    ],
)
def test_errors_are_neither_too_small_nor_too_large(rows, key):
    sigma = np.hypot(columns(rows, "network", f"{key}_err"), np.nan_to_num(columns(rows, "reference", f"{key}_err")))
    within = np.mean(np.abs(delta(rows, key)) <= sigma)
    assert WITHIN_1SIGMA[0] <= within <= WITHIN_1SIGMA[1]


@pytest.mark.parametrize("key", QUANTITIES)
def test_network_within_the_reference_envelope(rows, key):
    value, sigma = columns(rows, "network", key), columns(rows, "network", f"{key}_err")
    lo, hi = (np.array([row["envelope"][key][i] for row in rows]) for i in (0, 1))
    assert np.mean((value >= lo - sigma) & (value <= hi + sigma)) >= MIN_WITHIN_ENVELOPE


@unmet(
    "the MaNGA spaxel multicomp-2 is 0.54 dex older (network 9.09, reference 8.55); NGC 3073 -0.13, multicomp-1 +0.23"
)
def test_every_young_spectrum(rows):
    young = [row for row in rows if row["reference"]["lw_age"] < YOUNG_LW_AGE]
    assert len(young) >= 2
    worst = np.max(np.abs(delta(young, "lw_age")))
    assert worst <= MAX_YOUNG_ABS_DELTA_LW_AGE_DEX


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("lw_age", marks=unmet("Spearman rho 0.82 in LW age")),
        pytest.param("lw_logz", marks=unmet("Spearman rho 0.77 in LW log Z")),
    ],
)
def test_ranks(rows, key):
    net, ref = columns(rows, "network", key), columns(rows, "reference", key)
    assert scipy.stats.spearmanr(net, ref).statistic >= MIN_SPEARMAN_RHO[key]


@pytest.mark.slow
@pytest.mark.network  # the ppxf sdist and the sdss-mangadap wheel from the index (cached)
def test_the_network_still_gives_the_shipped_answers(rows, tmp_path):
    """The default network reads the real SDSS and MaNGA files of the embedded default as it did
    when shipped (same files, same corrections): its velocity search lands within 25 km/s of the
    shipped velocity and, read at that velocity, every answer is within 0.01 dex. The search is
    compared loosely because float32 sums differ between CPUs (AVX2 and AVX-512 kernels): on the
    MaNGA spaxel 8138-12704 (S/N 150) they moved it by 11 km/s and its MW age by 0.024 dex."""
    from sfh_pipeline import load_predictor
    from sfh_pipeline.fetch import fetch_source
    from sfh_pipeline.spectra_validation import corrected_spectrum, network_answer
    from sfh_pipeline.spectral import velocity_to_redshift

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sfh-pipeline"
    entry = CATALOG[DEFAULT]
    # float32, as the shipped answers were made; bfloat16 moves them by <= 0.02 dex
    # (bench/results/inference_speed_reference.json)
    predictor = load_predictor(
        REPO / "models" / entry["path"], device="cpu", sha256=entry["sha256"], precision="float32"
    )
    shipped = {(row["set"], row["name"]): row["network"] for row in rows}
    shipped_velocity = {
        (set_name, name): row["network_velocity_kms"]
        for set_name in config["real_spectra"]
        for name, row in json.loads((SUMMARY.parent / f"{set_name}.json").read_text())["spectra"].items()
    }
    checked = 0
    for set_name, spectra in config["real_spectra"].items():
        for name, spectrum_entry in spectra.items():
            path = fetch_source(config["downloads"][spectrum_entry["file"]], tmp_path, cache_dir=cache)
            spectrum, flux, error, bad = corrected_spectrum({**spectrum_entry, "file": path}, name)
            settings = {k: v for k, v in config["validate"].items() if k != "second_ssp"}
            velocity = shipped_velocity[set_name, name]
            searched = network_answer(predictor, spectrum, flux, error, bad, settings)
            assert float(searched["velocity_kms"]) == pytest.approx(velocity, abs=25), name
            answer = predictor.predict(
                spectrum.wave_aa, flux, error, z=velocity_to_redshift(velocity), mask=bad, velocity_range_kms=0
            )
            for key in ("lw_age", "mw_age", "lw_logz", "mw_logz"):
                assert float(answer[key]) == pytest.approx(shipped[set_name, name][key], abs=0.01), (name, key)
            checked += 1
    assert checked == 11
