"""Tests of sfh_pipeline.evaluation: summary metrics and the evaluation of a trained model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr

from sfh_pipeline.evaluation import evaluate_model, summary_metrics
from sfh_pipeline.training import calibrate_sigmas

SUMMARY = ("lw_age", "mw_age", "lw_logz", "mw_logz")
FIGURES = ("pred_vs_true.png", "sfh_bins.png", "age_metallicity.png")


def test_constant_offset_gives_bias_and_no_scatter():
    true = np.linspace(8.0, 10.0, 101)
    m = summary_metrics(true + 0.2, true)
    assert m["bias_dex"] == pytest.approx(0.2)
    assert m["scatter_dex"] == pytest.approx(0.0, abs=1e-12)
    assert m["rms_dex"] == pytest.approx(0.2)
    assert "coverage_68" not in m


def test_gaussian_noise_scatter_and_coverage():
    rng = np.random.default_rng(3)
    true = rng.uniform(-2, 0.5, 20_000)
    pred = true + rng.normal(0.0, 0.15, true.size)
    m = summary_metrics(pred, true, sigma=np.full(true.size, 0.15))
    assert m["bias_dex"] == pytest.approx(0.0, abs=0.005)
    assert m["scatter_dex"] == pytest.approx(0.15, rel=0.03)
    assert m["rms_dex"] == pytest.approx(0.15, rel=0.03)
    assert m["coverage_68"] == pytest.approx(0.683, abs=0.02)
    assert m["median_sigma_dex"] == pytest.approx(0.15)
    assert summary_metrics(pred, true, sigma=0.075)["coverage_68"] == pytest.approx(0.383, abs=0.02)


def test_non_finite_pairs_ignored_and_empty_is_nan():
    m = summary_metrics([1.0, np.nan, 3.0], [0.0, 1.0, 2.0])
    assert m["bias_dex"] == pytest.approx(1.0) and m["scatter_dex"] == pytest.approx(0.0)
    assert math.isnan(summary_metrics([], [])["bias_dex"])
    with pytest.raises(ValueError):
        summary_metrics([1.0, 2.0], [1.0])


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def evaluated(tiny_model, small_trainset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    returned = evaluate_model(tiny_model, small_trainset, out, device="cpu")
    return out, returned


def test_evaluate_model_metrics(evaluated, small_trainset):
    out, returned = evaluated
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == returned
    n_test = int(np.count_nonzero(np.asarray(zarr.open_group(small_trainset, mode="r")["split"][:]) == 2))
    assert metrics["n_test"] == n_test > 0
    for key in SUMMARY:
        assert set(metrics[key]) == {"bias_dex", "scatter_dex", "rms_dex", "coverage_68", "median_sigma_dex"}
        assert all(_finite(v) for v in metrics[key].values())
        assert 0.0 <= metrics[key]["coverage_68"] <= 1.0 and metrics[key]["median_sigma_dex"] > 0
    for key in ("mw_age_from_sfh", "mw_logz_from_sfh"):
        assert {"bias_dex", "scatter_dex", "rms_dex"} <= set(metrics[key])
        assert all(_finite(v) for v in metrics[key].values())
    bins = metrics["sfh_bins"]
    assert len(bins) == 16
    for b in bins:
        assert {"age_min_yr", "age_max_yr", "bias", "scatter", "mae", "logz_mae_mass_weighted"} <= set(b)
        assert b["age_min_yr"] < b["age_max_yr"]
        assert all(_finite(b[k]) for k in ("bias", "scatter", "mae"))
        assert b["logz_mae_mass_weighted"] is None or _finite(b["logz_mae_mass_weighted"])
    assert all(a["age_max_yr"] == b["age_min_yr"] for a, b in zip(bins, bins[1:]))
    assert _finite(metrics["sfh_cumulative_l1"]) and metrics["sfh_cumulative_l1"] >= 0
    by_snr = metrics["by_snr"]
    assert sum(entry["n"] for entry in by_snr) == n_test
    assert [(e["snr_min"], e["snr_max"]) for e in by_snr][:5] == [(5, 10), (10, 20), (20, 30), (30, 50), (50, 150)]
    for entry in by_snr:
        for key in SUMMARY:
            assert set(entry[key]) == {"bias_dex", "scatter_dex", "coverage_68"}
            if entry["n"] > 0:
                assert all(_finite(v) for v in entry[key].values())
    assert metrics["model"] == "tiny"
    assert metrics["trainset"] == str(small_trainset)
    assert metrics["test_loss_terms"] and all(_finite(v) for v in metrics["test_loss_terms"].values())


def test_evaluate_model_figures(evaluated):
    out, _ = evaluated
    for name in FIGURES:
        path = out / name
        assert path.exists() and path.stat().st_size > 10_000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_sigma_scale_applied(evaluated, tiny_model, small_trainset, tmp_path):
    import torch

    _, reference = evaluated
    payload = torch.load(tiny_model, weights_only=False)
    payload["sigma_scale"] = {k: 2.0 * v for k, v in payload["sigma_scale"].items()}
    scaled = tmp_path / "model.pt"
    torch.save(payload, scaled)
    metrics = evaluate_model(scaled, small_trainset, tmp_path / "out", device="cpu")
    for key in SUMMARY:
        assert metrics[key]["median_sigma_dex"] == pytest.approx(2.0 * reference[key]["median_sigma_dex"], rel=1e-5)
        # calibrated 1-sigma errors doubled cover about 95 % (Gaussian: 95.4 %)
        assert metrics[key]["coverage_68"] >= 0.88, (key, metrics[key]["coverage_68"])


def test_posterior_metrics_of_the_fixture_model(evaluated):
    """metrics.json reports the calibration of every posterior target on the test split: rank
    histograms that sum to 1 and 68/95 % coverages near their levels on average."""
    _, metrics = evaluated
    posteriors = metrics["posteriors"]
    assert len(posteriors["sfh"]) == len(posteriors["zh"]) == 16
    entries = posteriors["sfh"] + [e for e in posteriors["zh"] if e["n"] >= 30] + [posteriors["t50"], posteriors["t90"]]
    for entry in entries:
        assert sum(entry["rank_histogram"]) == pytest.approx(1.0) and len(entry["rank_histogram"]) == 6
    assert 0.58 <= np.mean([e["coverage_68"] for e in entries]) <= 0.78
    assert 0.88 <= np.mean([e["coverage_95"] for e in entries]) <= 0.99
    assert abs(posteriors["t50"]["bias_dex"]) < 0.15 and posteriors["t50"]["scatter_dex"] > 0


def test_the_calibration_of_the_fixture_model_calibrates_its_test_split(evaluated):
    """calibrate_sigmas is fitted on the validation split; the test split is independent of it."""
    _, metrics = evaluated
    for key in SUMMARY:
        assert 0.58 <= metrics[key]["coverage_68"] <= 0.78, (key, metrics[key]["coverage_68"])


def test_calibrate_sigmas_finds_the_factor_that_covers_68_percent():
    rng = np.random.default_rng(11)
    n = 40_000
    truth = {f"true_{key}": rng.uniform(8, 10, n) for key in SUMMARY}
    true_sigma = np.array([0.1, 0.2, 0.05, 0.3])
    pred = np.column_stack([truth[f"true_{key}"] + rng.normal(0, s, n) for key, s in zip(SUMMARY, true_sigma)])
    stated = np.tile([0.05, 0.4, 0.05, 0.1], (n, 1))  # too small, too large, right, too small
    scales = calibrate_sigmas({**truth, "pred_summary": pred, "pred_summary_sigma": stated})
    np.testing.assert_allclose([scales[k] for k in SUMMARY], true_sigma / stated[0], rtol=0.03)
    for i, key in enumerate(SUMMARY):
        covered = np.mean(np.abs(pred[:, i] - truth[f"true_{key}"]) <= scales[key] * stated[:, i])
        assert covered == pytest.approx(0.6827, abs=1e-3)


def test_missing_model_file_is_a_clear_error(small_trainset, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_model(tmp_path / "absent" / "model.pt", small_trainset, tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()
