"""Where the predictor's time per spectrum goes, and how it scales with processes, as JSON.

Usage:
    python bench/predictor_profile.py --model M [--int8] [--n 16384] [--start-delay 10] [--save NAME]

``Predictor.predict_normalised`` on ``n`` synthetic spectra on the model's grid (flux ~ 1 with
5 % noise, no mask; the network's cost does not depend on the values):

* ``profile_us_per_spectrum``: one process, one thread, under cProfile: the largest parts
  (the function's own time, µs per spectrum) and the total;
* ``spectra_per_s``: the same call timed without the profiler in 1 and 2 processes of one
  thread each, for batch sizes 128, 256 and 1024; each process predicts all ``n`` spectra
  after a warm-up, all starting together ``--start-delay`` seconds after the pool's start,
  and the rate is processes × n / the slowest.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from multiprocessing import get_context

import numpy as np
import torch
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.predict import load_predictor

BATCH_SIZES = (128, 256, 1024)


def synthetic_inputs(n_wave: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    flux = rng.normal(1.0, 0.05, (n, n_wave)).astype(np.float32)
    return flux, np.full((n, n_wave), 0.03, np.float32), np.zeros((n, n_wave), np.uint8)


def _timed_run(args: tuple[str, bool, int, int, float]) -> float:
    model, int8, n, batch_size, start_at = args
    torch.set_num_threads(1)
    predictor = load_predictor(model, device="cpu", int8=int8)
    inputs = synthetic_inputs(predictor.net.config.n_wave, n)
    predictor.predict_normalised(*(a[:2048] for a in inputs), batch_size=batch_size)
    while time.time() < start_at:  # every process starts its timed call at the same moment
        time.sleep(0.001)
    started = time.perf_counter()
    predictor.predict_normalised(*inputs, batch_size=batch_size)
    return time.perf_counter() - started


def profile(model: str, int8: bool, n: int) -> dict[str, float]:
    torch.set_num_threads(1)
    predictor = load_predictor(model, device="cpu", int8=int8)
    inputs = synthetic_inputs(predictor.net.config.n_wave, n)
    predictor.predict_normalised(*(a[:2048] for a in inputs), batch_size=1024)
    profiler = cProfile.Profile()
    profiler.runcall(predictor.predict_normalised, *inputs, batch_size=1024)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive, own, cumulative, callers)
    own = sorted(((v[2], k[2]) for k, v in stats.items()), reverse=True)[:8]
    parts = {name: round(seconds / n * 1e6, 2) for seconds, name in own}
    return {**parts, "total": round(sum(v[2] for v in stats.values()) / n * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--start-delay", type=float, default=10.0, help="s for every process to load and warm up")
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    rates = {}
    context = get_context("fork")
    for batch_size in BATCH_SIZES:
        for processes in (1, 2):
            with context.Pool(processes) as pool:
                start_at = time.time() + args.start_delay
                seconds = pool.map(_timed_run, [(args.model, args.int8, args.n, batch_size, start_at)] * processes)
            rates[f"batch_{batch_size}_processes_{processes}"] = round(processes * args.n / max(seconds), 1)
    figures = {
        "model": args.model,
        "int8": args.int8,
        "n_spectra": args.n,
        "profile_us_per_spectrum": profile(args.model, args.int8, args.n),
        "spectra_per_s": rates,
        "two_processes_over_one": {
            str(b): round(rates[f"batch_{b}_processes_2"] / rates[f"batch_{b}_processes_1"], 2) for b in BATCH_SIZES
        },
    }
    report(figures, args.save)


if __name__ == "__main__":
    main()
