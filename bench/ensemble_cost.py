"""What an ensemble costs against one of its members, on the same spectra, printed as JSON.

Usage:
    python bench/ensemble_cost.py --model results/models/<name>/model.pt [--trainset STORE]
        [--n 2048] [--batch-size 256] [--threads 1] [--repeats 3] [--save NAME]

``--model`` is an ensemble file (or the catalog name of one); its first member alone is the
comparison. Both read the same ``n`` spectra, timed as the best of ``--repeats`` after a
warm-up, in one process with ``--threads`` torch threads:

* ``network``: ``predict_normalised`` on spectra on the training grid (the network path of the
  tiled inference of cubes): the test split of ``--trainset`` if given, else synthetic spectra
  (flux ~ 1 with 5 % noise: the networks' cost does not depend on the values);
* ``observed`` (with ``--trainset`` only): ``predict`` of the same spectra put at z = 0.004 on
  the training grid's wavelengths, with the velocity refinement (once for the ensemble) and the
  rebinning both make.

Each gives ``ensemble_spectra_per_s``, ``one_member_spectra_per_s`` and ``time_ratio`` (the
ensemble's time over the member's; the members' networks alone would make it the number of
members).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline import load_predictor
from sfh_pipeline.predict import EnsemblePredictor


def compared(ensemble, member, call, n: int, repeats: int) -> dict[str, float]:
    """Rates (spectra/s) of ``call(predictor)`` for the ensemble and its member, each the best of
    ``repeats`` timings after a warm-up, the two timed in turn (a machine whose load drifts
    slows both alike), and their time ratio."""
    best = {"ensemble": float("inf"), "one": float("inf")}
    for predictor in (ensemble, member):
        call(predictor)  # warm-up
    for _ in range(repeats):
        for who, predictor in (("ensemble", ensemble), ("one", member)):
            started = time.perf_counter()
            call(predictor)
            best[who] = min(best[who], time.perf_counter() - started)
    return {
        "ensemble_spectra_per_s": round(n / best["ensemble"], 1),
        "one_member_spectra_per_s": round(n / best["one"], 1),
        "time_ratio": round(best["ensemble"] / best["one"], 3),
    }


def test_spectra(store: str, n: int) -> dict[str, np.ndarray]:
    import zarr

    group = zarr.open_group(store, mode="r")
    rows = np.flatnonzero(np.asarray(group["split"][:]) == 2)[:n]
    names = ("flux", "error", "mask", "phot", "phot_error")
    return {name: np.asarray(group[name].get_orthogonal_selection((rows, slice(None)))) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an ensemble file, or the catalog name of one")
    parser.add_argument("--trainset", default=None, help="training set whose test spectra are read (else synthetic)")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ensemble = load_predictor(args.model, device="cpu")
    if not isinstance(ensemble, EnsemblePredictor):
        raise SystemExit(f"{args.model} is a single model, not an ensemble")
    member = ensemble.members[0]
    if args.trainset:
        data = test_spectra(args.trainset, args.n)
    else:
        rng = np.random.default_rng(0)
        shape = (args.n, ensemble.wavelength_aa.size)
        data = {
            "flux": rng.normal(1.0, 0.05, shape).astype(np.float32),
            "error": np.full(shape, 0.03, np.float32),
            "mask": np.zeros(shape, np.uint8),
            "phot": None,
            "phot_error": None,
        }
    n = len(data["flux"])
    figures = {
        "model": args.model,
        "members": len(ensemble.members),
        "n_spectra": n,
        "spectra": f"test split of {args.trainset}" if args.trainset else "synthetic",
        "batch_size": args.batch_size,
        "threads": args.threads,
        "network": compared(
            ensemble,
            member,
            lambda p: p.predict_normalised(*data.values(), batch_size=args.batch_size),
            n,
            args.repeats,
        ),
    }
    if args.trainset:
        z = 0.004
        wave = ensemble.wavelength_aa * (1 + z)
        flux = np.where(data["mask"] & 4, np.nan, data["flux"])  # pixels without valid input in the set
        figures["observed"] = compared(
            ensemble,
            member,
            lambda p: p.predict(wave, flux, data["error"], z=z, batch_size=args.batch_size),
            n,
            args.repeats,
        )
    report(figures, args.save)


if __name__ == "__main__":
    main()
