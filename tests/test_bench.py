"""bench/ppxf_vs_cnn.py end to end on the test fixtures: the pPXF pool, the CNN timing, the JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "ppxf_vs_cnn.py"


def test_ppxf_vs_cnn_reports_both_methods_on_the_same_spectra(tiny_model, small_trainset, analytic_ssp_store):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--model", str(tiny_model), "--trainset", str(small_trainset),
         "--ssp", str(analytic_ssp_store), "--n", "4", "--processes", "2", "--cnn-timing-n", "64"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["n_spectra"] == 4 and result["processes"] == 2
    bins, metallicities, templates = map(int, re.fullmatch(r"(\d+) age bins x (\d+) metallicities = (\d+)",
                                                           result["templates"]).groups())
    assert bins == 16 and metallicities > 1 and templates == bins * metallicities
    np.testing.assert_allclose(result["speed_ratio"], result["cnn_spectra_per_s"] / result["ppxf_spectra_per_s"],
                               rtol=1e-3)
    np.testing.assert_allclose(result["speed_ratio_one_core"],
                               result["cnn_spectra_per_s_one_core"] * result["ppxf_s_per_spectrum"], rtol=1e-2)
    # two processes fit in parallel: the pool's throughput beats one process's
    assert result["ppxf_spectra_per_s"] > 1.0 / result["ppxf_s_per_spectrum"]
    for method in ("ppxf", "cnn"):
        for quantity in ("lw_age", "mw_age", "lw_logz", "mw_logz"):
            assert np.isfinite(result[method][quantity]["scatter_dex"])
    assert 0.0 <= result["cnn"]["lw_age"]["coverage_68"] <= 1.0


def test_robustness_bench_compares_models_on_each_test_split(tiny_model, small_trainset):
    """bench/robustness.py: a model on a test split it was made from equals the evaluation's own
    figures (bias and scatter of the test split, from the same predictions)."""
    import zarr

    from sfh_pipeline import load_predictor

    bench = BENCH.parent / "robustness.py"
    done = subprocess.run([sys.executable, str(bench), "--model", f"tiny={tiny_model}",
                           "--testset", f"small={small_trainset}"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)["results"]["tiny on small"]
    group = zarr.open_group(small_trainset, mode="r")
    test = np.flatnonzero(np.asarray(group["split"][:]) == 2)
    data = {k: np.asarray(group[k].get_orthogonal_selection((test, slice(None)) if group[k].ndim == 2 else (test,)))
            for k in ("flux", "error", "mask", "phot", "phot_error", "lw_age")}
    predicted = load_predictor(tiny_model, device="cpu").predict_normalised(
        data["flux"], data["error"], data["mask"], data["phot"], data["phot_error"])
    delta = predicted["lw_age"] - data["lw_age"]
    assert result["n"] == test.size
    assert result["lw_age"]["bias_dex"] == pytest.approx(np.median(delta), abs=1e-4)
    assert result["lw_age"]["scatter_dex"] == pytest.approx(1.4826 * np.median(np.abs(delta - np.median(delta))), abs=1e-4)


def test_library_crosscheck_fits_the_first_library_with_both(tmp_path):
    """bench/library_crosscheck.py: the first library's populations fitted with both libraries; with
    the same library twice (the second at every age) the differences are small."""
    import yaml

    from sfh_pipeline.ssp import write_store
    from tests.test_validate import line_library

    store = write_store(line_library(), tmp_path / "lines.zarr")
    config = {"validate": {"age_min_yr": 3e7, "age_stride": 3, "n_bootstrap": 0, "emission_mask_kms": 800,
                           "second_ssp": {"settings": {"age_stride": 1}}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    bench = BENCH.parent / "library_crosscheck.py"
    repo = str(BENCH.parents[1])
    done = subprocess.run(
        [sys.executable, str(bench), "--ssp", str(store), "--second-ssp", str(store),
         "--config", str(tmp_path / "config.yaml"), "--ages-gyr", "5", "--logz", "0.3", "--snr", "100"],
        capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["logz_shift_dex"] == 0.0 and result["second_settings"] == {"age_stride": 1}
    (row,) = result["spectra"]
    assert row["true"]["logz"] == pytest.approx(0.3) and row["true"]["log_age"] == pytest.approx(np.log10(5e9), abs=0.2)
    assert row["first"]["lw_age"] == pytest.approx(row["true"]["log_age"], abs=0.2)
    for key in ("lw_age", "lw_logz"):
        assert abs(row["difference"][key]) < 0.15, (key, row)
        assert row["difference"][key] == pytest.approx(row["first"][key] - row["second"][key])
