"""Trainings side by side: learning curves and test-split accuracy of models already trained.

Usage:
    python bench/compare_trainings.py --run NAME=MODEL_DIR[:EVAL_DIR] [--run ...]
        [--note TEXT] [--save NAME]

``MODEL_DIR`` is a train stage's folder (``history.json``, ``model.pt``); ``EVAL_DIR`` holds
the evaluate stage's ``metrics.json`` (default: ``MODEL_DIR``). For each run: the training
settings stored in ``model.pt``, the epochs run, the best validation loss and its epoch, the
train - validation gap at the last epoch (a growing gap is overfitting), and from metrics.json
the bias, scatter and 68 % coverage of the four summaries over the test split and by S/N.
Used to say which training change helped (docs/pipeline.md), with the commands in ``--note``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.ml.model import SUMMARY_KEYS, read_model_payload


def summarise(model_dir: Path, eval_dir: Path) -> dict:
    """Learning curve and test-split figures of one training."""
    epochs = json.loads((model_dir / "history.json").read_text())["epochs"]
    best = min(epochs, key=lambda e: e["val_loss"])
    payload = read_model_payload(model_dir / "model.pt")
    metrics = json.loads((eval_dir / "metrics.json").read_text())

    def figures(entry: dict) -> dict:
        return {k: {f: round(entry[k][f], 3) for f in ("bias_dex", "scatter_dex", "coverage_68")} for k in SUMMARY_KEYS}

    return {
        "train_config": payload.get("train_config"),
        "epochs_run": len(epochs),
        "best_epoch": best["epoch"],
        "best_val_loss": round(best["val_loss"], 4),
        "last_train_loss": round(epochs[-1]["train_loss"], 4),
        "last_val_loss": round(epochs[-1]["val_loss"], 4),
        "val_loss_curve": [round(e["val_loss"], 4) for e in epochs],
        "train_loss_curve": [round(e["train_loss"], 4) for e in epochs],
        "n_test": metrics.get("n_test"),
        "test": figures(metrics),
        "test_by_snr": [
            {"snr": [b["snr_min"], b["snr_max"]], "n": b["n"], **figures(b)} for b in metrics.get("by_snr", [])
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=MODEL_DIR[:EVAL_DIR]")
    parser.add_argument("--note", default="", help="how the runs were made (commands, data)")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    runs = {}
    for spec in args.run:
        name, _, dirs = spec.partition("=")
        model_dir, _, eval_dir = dirs.partition(":")
        runs[name] = summarise(Path(model_dir), Path(eval_dir or model_dir))
    report({"note": args.note, "runs": runs}, args.save)


if __name__ == "__main__":
    main()
