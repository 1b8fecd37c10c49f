"""The forward-model check, batched against pPXF one spectrum at a time, printed as JSON.

Usage:
    python bench/forward_check.py [--trainset resources/trainsets/demo/trainset.zarr]
        [--ssp resources/ssp/bc03_miles.zarr] [--n 200] [--save NAME]

Both fit the same ``n`` test-split spectra of a training set with the same model (the spectrum
of the population each was made from, through ``ForwardCheck``: velocity, dispersion, Calzetti
A_V and the mass), in one process: ``ForwardCheck.fit(method="batched")``, the workflow's, and
``method="ppxf"``, the same fit by pPXF. Run it with ``OMP_NUM_THREADS=1`` for the cost per
core. Each is timed twice, with the right populations and with each spectrum given its
neighbour's SFH (a wrong population, as the network's may be); the times include the forward
model of the populations, which both share. The agreement is per spectrum (batched minus
pPXF): relative for chi^2 and the mass, in km/s and mag for the others; and both against the
training set's true velocity, dispersion and A_V.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.forward_check import ForwardCheck
from sfh_pipeline.training import SPLIT_CODES, TrainsetReader

FITTED = ("chi2", "velocity_kms", "sigma_kms", "av", "mass_formed")


def test_spectra(trainset: str, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` test-split spectra with their populations and true kinematics and A_V."""
    reader = TrainsetReader(trainset)
    rows = np.flatnonzero(reader.split == SPLIT_CODES["test"])[:n]
    group = reader.group
    keys = ("flux", "error", "mask", "sfh", "logzsol", "velocity_kms", "sigma_kms", "av", "snr")
    return {
        k: np.asarray(group[k].get_orthogonal_selection((rows,) + (slice(None),) * (group[k].ndim - 1))) for k in keys
    } | {"wavelength_aa": reader.wavelength_aa, "age_bin_edges_yr": np.asarray(reader.attrs["age_bin_edges_yr"])}


def compare(trainset: str, ssp: str, n: int) -> dict:
    data = test_spectra(trainset, n)
    check = ForwardCheck(ssp, data["age_bin_edges_yr"], data["wavelength_aa"])
    inputs = (data["flux"], data["error"], data["mask"])
    populations = {"right": data["sfh"], "wrong": np.roll(data["sfh"], 1, axis=0)}
    fits, seconds = {}, {}
    for method in ("batched", "ppxf"):
        started = time.perf_counter()
        for name, sfh in populations.items():
            fits[method, name] = check.fit(*inputs, sfh, data["logzsol"], method=method)
        seconds[method] = time.perf_counter() - started
    figures: dict = {
        "n_spectra": int(len(data["flux"])),
        "median_snr": float(np.median(data["snr"])),
        "ms_per_spectrum": {m: 1e3 * s / (2 * len(data["flux"])) for m, s in seconds.items()},
        "speed_ratio": seconds["ppxf"] / seconds["batched"],
    }
    for name in populations:
        batched, ppxf = fits["batched", name], fits["ppxf", name]
        agreement = {}
        for key in FITTED:
            difference = batched[key] - ppxf[key]
            if key in ("chi2", "mass_formed"):
                difference = difference / ppxf[key]
            size = np.abs(difference)
            agreement[key] = {"median_abs": float(np.median(size)), "max_abs": float(np.max(size))}
        agreement["share_batched_chi2_lower"] = float(np.mean(batched["chi2"] < ppxf["chi2"]))
        figures[f"batched_minus_ppxf_{name}_population"] = agreement
    truth = {}
    for key in ("velocity_kms", "sigma_kms", "av"):
        truth[key] = {m: float(np.median(np.abs(fits[m, "right"][key] - data[key]))) for m in ("batched", "ppxf")}
    figures["median_abs_error_against_truth"] = truth
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainset", default="resources/trainsets/demo/trainset.zarr")
    parser.add_argument("--ssp", default="resources/ssp/bc03_miles.zarr")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    report(compare(args.trainset, args.ssp, args.n), args.save)


if __name__ == "__main__":
    main()
