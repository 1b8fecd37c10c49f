"""Models side by side on the test splits of several training sets (e.g. a clean one and one
with the realism terms that real spectra need): how much a model trained on perfect spectra
loses on spectra with emission-line wings, calibration errors and sky residuals, and what a
robust model pays on perfect ones. Prints JSON; ``--save NAME`` also keeps it in
bench/results/NAME.json.

    python bench/robustness.py --model demo=results/models/demo/model.pt real=results/models/real/model.pt \\
        --testset clean=resources/trainsets/demo/trainset.zarr real=resources/trainsets/real/trainset.zarr \\
        [--save robustness]
"""

from __future__ import annotations

import argparse

import numpy as np
import zarr
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline import load_predictor

KEYS = ("lw_age", "mw_age", "lw_logz", "mw_logz")


def named_paths(values: list[str]) -> dict[str, str]:
    return dict(value.split("=", 1) for value in values)


def test_split(path: str) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    rows = np.flatnonzero(np.asarray(group["split"][:]) == 2)
    out = {}
    for name in ("flux", "error", "mask", "phot", "phot_error", "snr", *KEYS):
        array = group[name]
        out[name] = np.asarray(array.get_orthogonal_selection((rows, slice(None)) if array.ndim == 2 else (rows,)))
    return out


def figures(predicted: dict, truth: dict) -> dict:
    out = {}
    for key in KEYS:
        delta = predicted[key] - truth[key]
        median = float(np.median(delta))
        out[key] = {
            "bias_dex": round(median, 4),
            "scatter_dex": round(float(1.4826 * np.median(np.abs(delta - median))), 4),
            "coverage_68": round(float(np.mean(np.abs(delta) <= predicted[f"{key}_err"])), 3),
        }
    old = (truth["lw_age"] >= 9.8) & (truth["snr"] < 30)
    out["old_low_snr_lw_age_bias_dex"] = round(float(np.median(predicted["lw_age"][old] - truth["lw_age"][old])), 4)
    out["n_old_low_snr"] = int(old.sum())
    out["ood_above_1"] = round(float(np.mean(predicted["ood"] > 1)), 4) if np.isfinite(predicted["ood"]).any() else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="NAME=path/to/model.pt ...")
    parser.add_argument("--testset", nargs="+", required=True, help="NAME=path/to/trainset.zarr ...")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    sets = {name: test_split(path) for name, path in named_paths(args.testset).items()}
    results = {}
    for model_name, path in named_paths(args.model).items():
        predictor = load_predictor(path, device="cpu")
        for set_name, data in sets.items():
            predicted = predictor.predict_normalised(
                data["flux"], data["error"], data["mask"], data["phot"], data["phot_error"], batch_size=512
            )
            results[f"{model_name} on {set_name}"] = {"n": int(data["snr"].size), **figures(predicted, data)}
    report(
        {"models": named_paths(args.model), "testsets": named_paths(args.testset), "results": results},
        args.save,
    )


if __name__ == "__main__":
    main()
