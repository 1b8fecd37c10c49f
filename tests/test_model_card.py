"""Shipping a model: its files, a model card that quotes its evaluation files, the catalog entry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
import zarr

from sfh_pipeline import load_predictor
from sfh_pipeline import model_card as card_module
from sfh_pipeline.evaluation import evaluate_model
from sfh_pipeline.model_card import ship_model
from sfh_pipeline.products import sha256_of

MOCK = {
    "n_bins": 812,
    **{
        k: {"spearman_rho": rho, "bias_dex": bias}
        for k, rho, bias in (
            ("lw_age", 0.941, 0.012),
            ("mw_age", 0.833, -0.047),
            ("lw_logz", 0.902, 0.021),
            ("mw_logz", 0.874, -0.033),
        )
    },
}
AGREEMENT = {
    "n_bins": 7,
    **{
        k: {"median_delta_dex": d, "scatter_dex": 0.05}
        for k, d in (("lw_age", -0.111), ("mw_age", -0.222), ("lw_logz", 0.044), ("mw_logz", -0.155))
    },
}

SUMMARY = {  # all real sets together, as validate_summary writes it: one young spectrum
    "sets": {"A478": 7, "spectra": 2},
    "n": 9,
    **{
        k: {"median_delta_dex": d, "scatter_dex": 0.1, "pull_within_1sigma": 7 / 9, "n": 9, "spearman_rho": 0.876}
        for k, d in (("lw_age", -0.011), ("mw_age", -0.022), ("lw_logz", 0.033), ("mw_logz", -0.044))
    },
    "envelope": {"lw_age": {"within_envelope": 8 / 9, "median_width_dex": 0.61, "n": 9}},
    "young": {"lw_age_threshold": 9.2, "n": 1, "lw_age": {"median_delta_dex": 0.3, "max_abs_delta_dex": 0.3}},
    "rows": [
        {"set": "spectra", "name": "old", "network": {"lw_age": 10.0}, "reference": {"lw_age": 9.9}},
        {"set": "spectra", "name": "NGC 1", "network": {"lw_age": 9.0}, "reference": {"lw_age": 8.7}},
    ],
}


@pytest.fixture(scope="module")
def evaluated(tiny_model, small_trainset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    return evaluate_model(tiny_model, small_trainset, out), out / "metrics.json"


def test_shipped_model_is_catalogued_verified_and_described_by_its_files(
    tiny_model, small_trainset, evaluated, tmp_path
):
    metrics, metrics_path = evaluated
    mock = tmp_path / "MOCK-X_vs_truth.json"
    mock.write_text(json.dumps(MOCK))
    (tmp_path / "A478").mkdir()
    agreement = tmp_path / "A478" / "agreement.json"
    agreement.write_text(json.dumps(AGREEMENT))
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps(SUMMARY))
    models = tmp_path / "models"

    entry = ship_model(
        tiny_model,
        metrics_path,
        models,
        "tiny",
        mock_comparisons=[mock],
        validations=[agreement, summary],
        commands=["snakemake all"],
        notes="stem stride 2 helped",
        trainset=small_trainset,
    )

    assert entry == {"path": "tiny/model.pt", "sha256": sha256_of(tiny_model), "card": "tiny/README.md"}
    catalog = yaml.safe_load((models / "catalog.yaml").read_text())
    assert catalog == {"tiny": entry}
    assert (models / "catalog.yaml").read_text().startswith("# Models committed")
    predictor = load_predictor(models / "tiny" / "model.pt", sha256=catalog["tiny"]["sha256"])
    assert predictor.path == models / "tiny" / "model.pt"
    payload = torch.load(predictor.path, weights_only=False)
    assert payload["name"] == metrics["model"]
    assert json.loads((models / "tiny" / "metrics.json").read_text()) == metrics
    assert json.loads((models / "tiny" / "mocks" / "MOCK-X.json").read_text()) == MOCK
    assert json.loads((models / "tiny" / "real_data" / "A478.json").read_text()) == AGREEMENT

    card = (models / "tiny" / "README.md").read_text()
    assert entry["sha256"] in card and "pretrained: tiny" in card
    lw_age = metrics["lw_age"]
    assert (
        f"| LW log age | {lw_age['bias_dex']:.3f} | {lw_age['scatter_dex']:.3f} | {lw_age['coverage_68']:.3f} |" in card
    )
    assert "| MOCK-X | 812 | 0.94 / 0.01 | 0.83 / -0.05 | 0.90 / 0.02 | 0.87 / -0.03 |" in card
    assert "| A478 | 7 | regularised | -0.11 (±0.05) | -0.22 (±0.05) | 0.04 (±0.05) | -0.15 (±0.05) |" in card
    assert json.loads((models / "tiny" / "real_data" / "summary.json").read_text()) == SUMMARY
    assert "| summary |" not in card and "All 9 real bins and spectra together (A478 7, spectra 2)" in card
    assert "| LW log age | -0.011 | 0.100 | 78% | 0.88 | 0.89 | 0.61 |" in card
    assert "| MW log age | -0.022 | 0.100 | 78% | 0.88 | n/a | n/a |" in card
    assert "largest |Δ| 0.30 dex (spectra NGC 1)" in card
    assert "stem stride 2 helped" in card and "snakemake all" in card
    epochs = len(payload["history"])
    assert f"{epochs} epochs" in card
    for figure in card_module.FIGURES:
        assert ((models / "tiny" / figure).is_file()) == (f"]({figure})" in card)

    check = np.load(models / "tiny" / card_module.CHECK_SPECTRA)
    assert check["flux"].shape[0] == 12
    # the stored answers are float32 ones, whatever this CPU picks by default
    float32 = load_predictor(models / "tiny" / "model.pt", precision="float32")
    again = float32.predict_normalised(*(check[k] for k in ("flux", "error", "mask", "phot", "phot_error")))
    np.testing.assert_allclose(again["lw_age"], check["pred_lw_age"], rtol=1e-6)
    group = zarr.open_group(small_trainset, mode="r")
    np.testing.assert_array_equal(np.asarray(group["split"][:])[check["rows"]], 2)
    np.testing.assert_array_equal(np.asarray(group["lw_age"][:])[check["rows"]], check["true_lw_age"])
    assert np.all(np.asarray(group["snr"][:])[check["rows"]] >= 20)

    # a second model joins the catalog; the first stays
    ship_model(tiny_model, metrics_path, models, "tiny2")
    assert set(yaml.safe_load((models / "catalog.yaml").read_text())) == {"tiny", "tiny2"}


def test_shipping_refuses_a_large_file_or_metrics_of_another_model(tiny_model, evaluated, tmp_path, monkeypatch):
    metrics, metrics_path = evaluated
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps({**metrics, "model": "someone-else"}))
    with pytest.raises(ValueError, match="evaluates model 'someone-else'"):
        ship_model(tiny_model, other, tmp_path / "models", "x")
    monkeypatch.setattr(card_module, "MAX_MODEL_MB", 1e-3)
    with pytest.raises(ValueError, match="a shipped model must be at most"):
        ship_model(tiny_model, metrics_path, tmp_path / "models", "x")
    assert not (tmp_path / "models").exists()
