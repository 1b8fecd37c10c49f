"""The models committed with the project (models/catalog.yaml): each loads with its sha256 checked
and predicts its check spectra (test-split spectra shipped beside it) as it did when shipped,
and close to their truths."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from sfh_pipeline import load_predictor
from sfh_pipeline.model_card import CHECK_SPECTRA

from .support.workflow import REPO

CATALOG = yaml.safe_load((REPO / "models" / "catalog.yaml").read_text()) or {}
SUMMARIES = ("lw_age", "mw_age", "lw_logz", "mw_logz")


def test_the_reference_model_is_shipped():
    assert "reference" in CATALOG, "config/phangs.yaml infers with model.pretrained: reference"
    assert yaml.safe_load((REPO / "config" / "phangs.yaml").read_text())["model"]["pretrained"] == "reference"


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_shipped_model_predicts_its_check_spectra(name):
    entry = CATALOG[name]
    folder = REPO / "models" / name
    assert (REPO / "models" / entry["card"]).is_file() and (folder / "metrics.json").is_file()
    # the arithmetic they were shipped with; the default's bfloat16 is judged below
    predictor = load_predictor(
        REPO / "models" / entry["path"], device="cpu", sha256=entry["sha256"], precision="float32"
    )
    check = np.load(folder / CHECK_SPECTRA)
    pred = predictor.predict_normalised(*(check[k] for k in ("flux", "error", "mask", "phot", "phot_error")))
    for key in SUMMARIES:
        # as when shipped (float32 arithmetic of another machine or torch version differs in the last digits)
        np.testing.assert_allclose(pred[key], check[f"pred_{key}"], atol=2e-3, err_msg=key)
        np.testing.assert_allclose(pred[f"{key}_err"], check[f"pred_{key}_err"], rtol=1e-2, atol=1e-3, err_msg=key)
    np.testing.assert_allclose(pred["sfh"], check["pred_sfh"], atol=2e-3)
    # and right: spectra at S/N >= 20, where the test split's scatter is <= 0.2 dex
    for key in SUMMARIES:
        delta = pred[key] - check[f"true_{key}"]
        assert np.median(np.abs(delta)) <= 0.2, (key, delta)
        assert np.mean(np.abs(delta) <= 3 * pred[f"{key}_err"]) >= 0.75, (key, delta, pred[f"{key}_err"])


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_bfloat16_arithmetic_keeps_the_shipped_answers(name):
    """Under bfloat16 autocast (the default where the CPU has it) each shipped model's answers on
    its check spectra move within the budget a faster arithmetic may spend: 0.02 dex in median
    (the budget on real spectra), 0.05 dex at most. bfloat16 kernels differ between CPUs: on the
    12 check spectra the median change was at most 0.010 dex on an AMD EPYC and 0.011 on an Intel
    Xeon with AVX512-BF16, where the 11 real SDSS and MaNGA spectra moved 0.004-0.007 dex."""
    entry = CATALOG[name]
    check = np.load(REPO / "models" / name / CHECK_SPECTRA)
    inputs = [check[k] for k in ("flux", "error", "mask", "phot", "phot_error")]
    answers = {
        precision: load_predictor(
            REPO / "models" / entry["path"], device="cpu", precision=precision
        ).predict_normalised(*inputs)
        for precision in ("float32", "bf16")
    }
    for key in SUMMARIES:
        change = np.abs(answers["bf16"][key] - answers["float32"][key])
        assert np.median(change) <= 0.02 and change.max() <= 0.05, (key, np.median(change), change.max())
        assert 0 < change.max(), key  # bfloat16 did run
