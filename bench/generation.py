"""Training-set generation throughput, printed as JSON.

Usage:  python bench/generation.py [--ssp resources/ssp/bc03_miles.zarr] [--chunk 2000] [--save NAME]

Times one chunk job's work (model build excluded and reported separately) with one BLAS
thread, as the chunk jobs run; Snakemake runs one job per core, so the 2-core projection
for the paper's 165,000 spectra is 165000 / (2 x spectra_per_s_per_core). The stages are
timed side by side on the same draws to show where the time goes.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from provenance import report  # bench/provenance.py: this script's folder is on sys.path
from threadpoolctl import threadpool_limits

from sfh_pipeline.filters import PHANGS_FILTERS
from sfh_pipeline.priors import sample_metallicity, sample_sfh
from sfh_pipeline.trainset import build_model, generate_chunk, resolve_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ssp", default="resources/ssp/bc03_miles.zarr")
    parser.add_argument("--chunk", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    config = resolve_config({"n_spectra": args.chunk, "chunk_size": args.chunk})

    with threadpool_limits(limits=1, user_api="blas"):
        t0 = time.perf_counter()
        model = build_model(config, args.ssp, PHANGS_FILTERS)
        build_s = time.perf_counter() - t0

        chunk_s = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            generate_chunk(config, model, i)
            chunk_s.append(time.perf_counter() - t0)

        rng = np.random.default_rng(0)
        n = args.chunk
        t0 = time.perf_counter()
        sfh = sample_sfh(rng, model.edges_yr, n)
        logz = sample_metallicity(rng, sfh.mass_fractions, (model.logzsol[0], model.logzsol[-1]))
        priors_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.model(sfh.mass_fractions, logz, rng.uniform(0, 2, n), rng.uniform(20, 250, n), rng.uniform(-50, 50, n))
        model_s = time.perf_counter() - t0
        saved_filters = model.filters
        model.filters = ()
        t0 = time.perf_counter()
        model.model(sfh.mass_fractions, logz, rng.uniform(0, 2, n), rng.uniform(20, 250, n), rng.uniform(-50, 50, n))
        spectrum_only_s = time.perf_counter() - t0
        model.filters = saved_filters

    per_core = args.chunk / min(chunk_s)
    report(
        {
            "chunk_size": args.chunk,
            "model_build_s": round(build_s, 3),
            "chunk_s": [round(s, 3) for s in chunk_s],
            "spectra_per_s_per_core": round(per_core, 1),
            "projected_165k_s": round(165_000 / (2 * per_core) + build_s * 165_000 / args.chunk / 2, 1),
            "projected_165k_s_note": "2 cores, one chunk job per core, includes each job's model build",
            "breakdown_s": {
                "priors": round(priors_s, 3),
                "spectra_dust_kinematics": round(spectrum_only_s, 3),
                "photometry": round(model_s - spectrum_only_s, 3),
                "noise_masks_labels": round(min(chunk_s) - priors_s - model_s, 3),
            },
            "machine": platform.processor() or platform.machine(),
        },
        args.save,
    )


if __name__ == "__main__":
    main()
