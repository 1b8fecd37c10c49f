"""Agreement with full spectral fitting of the mean of several networks' answers.

Reads the ``bins.fits`` (or ``spectra.fits``) tables that the validate stage wrote for the same
galaxy with different models, averages the networks' answers bin by bin (error: the members'
mean variance plus the variance of their answers, both in dex²) and prints JSON: the
agreement of each member and of their mean with the first table's reference, in the keys of
``agreement.json``. Every table must hold the same bins with the same reference fit.
``--save NAME`` also keeps it as ``bench/results/NAME.json``.

    python bench/answer_ensemble.py run_a/validation/A478/bins.fits run_b/validation/A478/bins.fits [--save NAME]
"""

from __future__ import annotations

import argparse

import numpy as np
from astropy.io import fits
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.validate import QUANTITIES, agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="+", help="bins.fits or spectra.fits of the validate stage, one per model")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    tables = [fits.getdata(path, 1) for path in args.tables]
    reference, mean = {}, {}
    members = [{} for _ in tables]
    for key in QUANTITIES:
        column = key.upper()
        reference[key] = np.asarray(tables[0][f"REF_{column}"], float)
        reference[f"{key}_err"] = np.asarray(tables[0][f"REF_{column}_ERR"], float)
        for path, table, member in zip(args.tables, tables, members):
            same_fit = len(table) == len(tables[0]) and np.allclose(
                table[f"REF_{column}"], reference[key], equal_nan=True
            )
            if not same_fit:
                raise ValueError(
                    f"{path} has another reference fit than {args.tables[0]}: give tables of one galaxy, "
                    "binned and validated with the same settings"
                )
            member[key] = np.asarray(table[f"NET_{column}"], float)
            member[f"{key}_err"] = np.asarray(table[f"NET_{column}_ERR"], float)
        answers = np.stack([m[key] for m in members])
        variances = np.stack([m[f"{key}_err"] ** 2 for m in members])
        mean[key] = answers.mean(0)
        mean[f"{key}_err"] = np.sqrt(variances.mean(0) + answers.var(0))
    figures = {
        "tables": args.tables,
        "members": [agreement(m, reference) for m in members],
        "mean_of_answers": agreement(mean, reference),
        "mean_minus_reference_per_bin": {k: np.round(mean[k] - reference[k], 3).tolist() for k in QUANTITIES},
    }
    report(figures, args.save)


if __name__ == "__main__":
    main()
