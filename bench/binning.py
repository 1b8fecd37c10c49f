"""Timing of adaptive binning (vorbin vs powerbin, whole map vs independent tiles).

Synthetic exponential-disc S/N maps (S/N ~100 at the centre to ~1 at the mid-edges, three
masked holes, noise varying per spaxel) of 1e4, 1e5 and 1e6 spaxels, target S/N 35,
min S/N 1. One process, BLAS limited to one thread. A combination whose time, extrapolated
from the next smaller size, would exceed ``--budget`` seconds is skipped and reported as such.

Usage: ``python bench/binning.py [--sizes 1e4 1e5 1e6] [--tile-size 128] [--budget 600] [--save NAME]``;
prints one JSON line per run, then the summary JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from provenance import report  # noqa: E402  bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.binning import voronoi_bins  # noqa: E402

#: Exponents of time ~ N^k used to extrapolate, from vorbin's docs / our earlier runs (1.3) and
#: powerbin's measured 1e4 -> 1e5 growth; tiles scale linearly with the number of tiles.
SCALING = {"vorbin": 1.3, "powerbin": 1.15, "vorbin/tiles": 1.0, "powerbin/tiles": 1.0}


def disc_map(n_spaxels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    side = int(round(np.sqrt(n_spaxels)))
    y, x = np.mgrid[:side, :side]
    r = np.hypot(x - side / 2, y - side / 2) / (side / 2)
    sn = 100.0 * 0.01**r
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.5, 2.0, (side, side))
    signal = sn * noise * (1 + 0.05 * rng.standard_normal((side, side)))
    for cy, cx, rad in ((0.3, 0.7, 0.06), (0.65, 0.25, 0.08), (0.5, 0.52, 0.03)):
        hole = np.hypot(y / side - cy, x / side - cx) < rad
        signal[hole] = noise[hole] = np.nan
    return signal, noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--budget", type=float, default=600.0, help="skip runs projected to exceed this (s)")
    parser.add_argument("--target-sn", type=float, default=35.0)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    warm_s, warm_n = disc_map(400)  # imports and first-call costs outside the timings
    for method in ("powerbin", "vorbin"):
        voronoi_bins(warm_s, warm_n, args.target_sn, 1.0, method=method)

    runs = []
    last: dict[str, tuple[int, float]] = {}
    for size in sorted(int(s) for s in args.sizes):
        signal, noise = disc_map(size)
        for name in ("powerbin", "powerbin/tiles", "vorbin", "vorbin/tiles"):
            method = name.split("/")[0]
            tile = args.tile_size if name.endswith("/tiles") else None
            entry = {"method": method, "tile_size": tile, "n_spaxels": int(signal.size)}
            if name in last:
                n0, t0 = last[name]
                projected = t0 * (signal.size / n0) ** SCALING[name]
                if projected > args.budget:
                    entry.update(
                        skipped=True,
                        reason=f"projected {projected:.0f} s (from {t0:.1f} s at {n0} spaxels, "
                        f"~N^{SCALING[name]}) exceeds the {args.budget:.0f} s budget",
                    )
                    runs.append(entry)
                    print(json.dumps(entry), flush=True)
                    continue
            start = time.perf_counter()
            result = voronoi_bins(signal, noise, args.target_sn, 1.0, method=method, tile_size=tile)
            seconds = time.perf_counter() - start
            ids = result.bin_id[result.bin_id >= 0]
            multi = np.bincount(ids, minlength=result.n_bins) > 1
            ratio = result.bin_snr[multi] / args.target_sn
            entry.update(
                seconds=round(seconds, 2),
                n_binned=int(ids.size),
                n_bins=result.n_bins,
                n_multi_spaxel_bins=int(multi.sum()),
                frac_multi_within_20pct=round(float(np.mean(np.abs(ratio - 1) < 0.2)), 3),
                snr_ratio_p5_p50_p95=[round(float(v), 3) for v in np.percentile(ratio, [5, 50, 95])],
            )
            last[name] = (signal.size, seconds)
            runs.append(entry)
            print(json.dumps(entry), flush=True)
    report(
        {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), 1 BLAS thread",
            "target_sn": args.target_sn,
            "min_sn": 1.0,
            "runs": runs,
        },
        args.save,
    )


if __name__ == "__main__":
    main()
