"""pPXF against the CNN on the same held-out spectra, same CPU, printed as JSON.

Usage:
    python bench/ppxf_vs_cnn.py [--model results/models/demo/model.pt]
        [--trainset resources/trainsets/demo/trainset.zarr] [--ssp resources/ssp/bc03_miles.zarr]
        [--n 200] [--regul 5] [--batch-size 1024] [--processes N] [--save NAME]

Same model space for both: the pPXF templates are the 16 age-bin spectra (constant SFR
within each bin, the same bin-averaged SSPs as the training set, convolved to the MUSE LSF)
at each of the library's metallicities (16 x 7 = 112 templates for BC03), normalised per
unit mass formed. pPXF fits stellar kinematics (V, sigma) together with a regularised
(``regul``, second-order, over the 16 x 7 grid, as in PHANGS) population mix, with an
8th-degree multiplicative polynomial standing in for dust, on the same masked pixels.
Mass weights are pPXF's weights; light weights are weights x template flux in the
normalisation window.

A second baseline is what a user who wants what the predictor returns (a history with
uncertainties, from the whole library) would otherwise run: the validate stage's full fit
(:class:`sfh_pipeline.validate.FullGridFit` with its default settings: every library age above
30 Myr and every metallicity, regularised and unregularised solutions, wild-bootstrap errors),
on the same spectra, timed the same way (``--n-full`` of them; 0 skips it).
``speed_ratio_minimal`` (= ``speed_ratio``) and ``speed_ratio_full_fit`` compare the CNN with each.

Timing, all methods on the whole CPU (``--processes``, default: every core this process may
use): pPXF as astronomers run it on many spectra, one single-threaded fit per process in a
pool of that many processes; the CNN batched through the predictor with as many torch
threads (best of three passes over the same spectra repeated to at least ``--cnn-timing-n``,
so that a pass lasts long enough to time). ``speed_ratio`` is the ratio of the two throughputs. Per core:
``ppxf_s_per_spectrum`` is the mean wall time of one fit in its process, and
``speed_ratio_one_core`` compares it with the CNN on one thread. ``speed_ratio_processes``
runs the CNN as pPXF is run, one single-threaded process per core: the spectra's encoding is
NumPy on one thread, which threads of torch do not share out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import zarr
from ppxf import ppxf_util
from ppxf.ppxf import ppxf
from provenance import report  # bench/provenance.py: this script's folder is on sys.path
from threadpoolctl import threadpool_limits

import sfh_pipeline
from sfh_pipeline.constants import C_KMS
from sfh_pipeline.evaluation import summary_metrics
from sfh_pipeline.forward import ForwardModel
from sfh_pipeline.instrument import linear_grid
from sfh_pipeline.model import load_model_file, read_model_payload, without_posterior_heads
from sfh_pipeline.ssp import load_ssp

QUANTITIES = ("lw_age", "mw_age", "lw_logz", "mw_logz")


def bin_templates(ssp_store: str, edges_yr, wave_out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_wave, n_bins, n_Z) bin spectra on ``wave_out`` per unit mass formed, and the grids."""
    model = ForwardModel(load_ssp(ssp_store), edges_yr, wavelength_aa=wave_out, max_velocity_kms=300.0)
    n_bins, n_z = model.n_bins, model.logzsol.size
    templates = np.empty((wave_out.size, n_bins, n_z))
    for k in range(n_bins):
        x = np.zeros((n_z, n_bins))
        x[:, k] = 1.0
        logz = np.repeat(model.logzsol[:, None], n_bins, axis=1)
        templates[:, k, :] = model.model(x, logz, np.zeros(n_z), np.zeros(n_z)).flux.T
    return templates, model.bin_age_yr, model.logzsol


def fit_ppxf(galaxy_wave, flux, error, mask, templates, template_wave, bin_age_yr, logzsol, window, regul):
    """Light- and mass-weighted <log age> and <log Z> of one pPXF fit."""
    galaxy, ln_lam, velscale = ppxf_util.log_rebin(galaxy_wave[[0, -1]], flux)
    noise, _, _ = ppxf_util.log_rebin(galaxy_wave[[0, -1]], error**2)
    noise = np.sqrt(np.clip(noise, 1e-12, None))
    bad, _, _ = ppxf_util.log_rebin(galaxy_wave[[0, -1]], (mask != 0).astype(float))
    good = (bad < 1e-3) & np.isfinite(galaxy) & (noise > 0)
    shape = templates.shape
    log_templates, ln_lam_temp, _ = ppxf_util.log_rebin(
        template_wave[[0, -1]], templates.reshape(shape[0], -1), velscale=velscale
    )
    scale = np.median(log_templates)
    pp = ppxf(
        log_templates / scale,
        galaxy,
        noise,
        velscale,
        start=[0.0, 100.0],
        moments=2,
        degree=-1,
        mdegree=8,
        regul=regul,
        reg_dim=shape[1:],
        mask=good,
        bounds=[[-300.0, 300.0], [1.0, 600.0]],
        lam=np.exp(ln_lam),
        lam_temp=np.exp(ln_lam_temp),
        quiet=True,
    )
    weights = pp.weights.reshape(shape[1:])  # (n_bins, n_Z), per unit mass formed
    light = weights * templates[window].mean(0)
    log_age = np.log10(bin_age_yr)[:, None]
    logz = logzsol[None, :]
    return {
        "lw_age": float((light * log_age).sum() / light.sum()),
        "mw_age": float((weights * log_age).sum() / weights.sum()),
        "lw_logz": float((light * logz).sum() / light.sum()),
        "mw_logz": float((weights * logz).sum() / weights.sum()),
        "velocity_kms": float(pp.sol[0]),
        "sigma_kms": float(pp.sol[1]),
        "chi2": float(pp.chi2),
    }


_FIT_SETTINGS: dict = {}
_FULL_FIT: dict = {}


def _timed_full_fit(i: int) -> tuple[dict, float]:
    """The validate stage's full fit of test spectrum i in a pool worker, and its wall time, s."""
    settings = _FIT_SETTINGS
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        fit = _FULL_FIT["fit"].fit(settings["wave"], settings["flux"][i], settings["error"][i], settings["mask"][i])
        return {q: float(fit[q]) for q in QUANTITIES}, time.perf_counter() - start


def _timed_fit(i: int) -> tuple[dict, float]:
    """One pPXF fit of test spectrum i in a pool worker (settings inherited by fork), and its wall time, s."""
    settings = _FIT_SETTINGS
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        fit = fit_ppxf(
            settings["wave"],
            settings["flux"][i],
            settings["error"][i],
            settings["mask"][i],
            settings["templates"],
            settings["template_wave"],
            settings["bin_age"],
            settings["logzsol"],
            settings["in_window"],
            settings["regul"],
        )
        return fit, time.perf_counter() - start


def cnn_rate(predictor, data: dict, batch_size: int, threads: int, min_spectra: int) -> float:
    """Spectra per second of batched prediction with ``threads`` torch threads: best of three
    passes over the spectra of ``data`` repeated to at least ``min_spectra``."""
    import torch

    repeats = -(-min_spectra // data["flux"].shape[0])
    inputs = [np.tile(data[name], (repeats, 1)) for name in ("flux", "error", "mask", "phot", "phot_error")]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            predictor.predict_normalised(*inputs, batch_size=batch_size)
            seconds.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return inputs[0].shape[0] / min(seconds)


_CNN_WORKER: dict = {}


def _load_worker(model: str, int8: bool, batch_size: int) -> None:
    torch.set_num_threads(1)
    _CNN_WORKER.update(predictor=sfh_pipeline.load_predictor(model, device="cpu", int8=int8), batch_size=batch_size)


def _predict_share(i: int) -> int:
    inputs = _CNN_WORKER["shares"][i]  # inherited by fork: no spectra pass between processes
    _CNN_WORKER["predictor"].predict_normalised(*inputs, batch_size=_CNN_WORKER["batch_size"])
    return inputs[0].shape[0]


def cnn_rate_processes(model: str, int8: bool, data: dict, batch_size: int, processes: int, min_spectra: int) -> float:
    """Spectra per second of the whole CPU running the predictor as pPXF is run: one
    single-threaded process per core, each on its share of the spectra (model loading not
    timed; best of three)."""
    repeats = -(-min_spectra // data["flux"].shape[0])
    inputs = [np.tile(data[name], (repeats, 1)) for name in ("flux", "error", "mask", "phot", "phot_error")]
    _CNN_WORKER["shares"] = [[a[i::processes] for a in inputs] for i in range(processes)]
    with get_context("fork").Pool(processes, initializer=_load_worker, initargs=(model, int8, batch_size)) as pool:
        pool.map(_predict_share, range(processes), chunksize=1)  # warm-up: models loaded, one pass run
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            pool.map(_predict_share, range(processes), chunksize=1)
            seconds.append(time.perf_counter() - start)
    return inputs[0].shape[0] / min(seconds)


def flops_per_spectrum(net: torch.nn.Module, n: int = 64) -> float:
    """Floating-point operations of one forward pass per spectrum (torch's FLOP counter on the
    float network; a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    config = net.config
    spectrum, photometry = torch.randn(n, 3, config.n_wave), torch.randn(n, 3 * config.n_filters)
    # gradients on, as in training: under inference mode the counter's module hooks fail on attention
    with FlopCounterMode(display=False) as counter:
        net(spectrum, photometry)
    return counter.get_total_flops() / n


def gemm_gflops(threads: int, size: int = 2048) -> float:
    """What this CPU does at best in FP32 with ``threads`` threads: GFLOP/s of a large square
    matrix product (best of five), the practical peak the network's rate is compared with."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(5))
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="results/models/demo/model.pt")
    parser.add_argument("--trainset", default="resources/trainsets/demo/trainset.zarr")
    parser.add_argument("--ssp", default="resources/ssp/bc03_miles.zarr")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--regul", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=1024, help="CNN inference batch size")
    parser.add_argument(
        "--processes",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="pPXF processes and CNN threads (default: the usable cores)",
    )
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    parser.add_argument("--cnn-timing-n", type=int, default=8192, help="spectra per timed CNN pass")
    parser.add_argument("--int8", action="store_true", help="the network's Linear layers in int8 (Predictor int8=True)")
    parser.add_argument(
        "--n-full", type=int, default=None, help="spectra of the full-fit baseline (default: all --n; 0: none)"
    )
    args = parser.parse_args()

    group = zarr.open_group(args.trainset, mode="r")
    test = np.flatnonzero(np.asarray(group["split"][:]) == 2)[: args.n]
    data = {
        name: np.asarray(group[name].get_orthogonal_selection((test,)))
        for name in ("flux", "error", "mask", "phot", "phot_error", "snr", *QUANTITIES)
    }
    wave = np.asarray(group["wavelength_aa"][:])
    window = tuple(group.attrs["config"]["norm_window_aa"])

    predictor = sfh_pipeline.load_predictor(args.model, int8=args.int8)
    cnn = predictor.predict_normalised(data["flux"], data["error"], data["mask"], data["phot"], data["phot_error"])
    cnn_all_cores = cnn_rate(predictor, data, args.batch_size, args.processes, args.cnn_timing_n)
    cnn_one_core = cnn_rate(predictor, data, args.batch_size, 1, args.cnn_timing_n)
    cnn_processes = cnn_rate_processes(args.model, args.int8, data, args.batch_size, args.processes, args.cnn_timing_n)
    posterior_cost = None
    if predictor.model_config.posterior_heads:  # the same network without them, timed alike
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(
                without_posterior_heads(read_model_payload(predictor.path)),
                Path(tmp) / "model.pt",
            )
            point = sfh_pipeline.load_predictor(Path(tmp) / "model.pt", int8=args.int8)
            point_rate = cnn_rate(point, data, args.batch_size, args.processes, args.cnn_timing_n)
            with_rate = cnn_rate(predictor, data, args.batch_size, args.processes, args.cnn_timing_n)
        posterior_cost = {
            "cnn_spectra_per_s_point_estimates_only": round(point_rate, 1),
            "cnn_spectra_per_s_with_posteriors": round(with_rate, 1),
            "time_ratio": round(point_rate / with_rate, 3),
        }

    flops = flops_per_spectrum(load_model_file(predictor.path)[0])
    gemm_peak = gemm_gflops(args.processes)

    margin = 1500.0 / C_KMS  # pPXF wants templates beyond the galaxy by its velocity bounds + 900 km/s
    template_wave = linear_grid(wave[0] * (1 - margin) // 1, wave[-1] * (1 + margin) // 1 + 1, 1.25)
    templates, bin_age, logzsol = bin_templates(args.ssp, group.attrs["age_bin_edges_yr"], template_wave)
    _FIT_SETTINGS.update(
        wave=wave,
        flux=data["flux"],
        error=data["error"],
        mask=data["mask"],
        templates=templates,
        template_wave=template_wave,
        bin_age=bin_age,
        logzsol=logzsol,
        regul=args.regul,
        in_window=(template_wave >= window[0]) & (template_wave <= window[1]),
    )
    start = time.perf_counter()
    with get_context("fork").Pool(args.processes) as pool:
        fits, seconds = zip(*pool.map(_timed_fit, range(test.size), chunksize=1))
    ppxf_rate = test.size / (time.perf_counter() - start)
    ppxf_s = float(np.mean(seconds))

    full = None
    n_full = test.size if args.n_full is None else min(args.n_full, test.size)
    if n_full:
        from sfh_pipeline.validate import DEFAULT_SETTINGS, FullGridFit

        _FULL_FIT["fit"] = FullGridFit(args.ssp, (float(wave[0]), float(wave[-1])), 0.0, None, window)
        start = time.perf_counter()
        with get_context("fork").Pool(args.processes) as pool:
            full_fits, full_seconds = zip(*pool.map(_timed_full_fit, range(n_full), chunksize=1))
        full_rate = n_full / (time.perf_counter() - start)
        truth = {q: data[q][:n_full] for q in QUANTITIES}
        full = {
            "n_spectra": n_full,
            "settings": {
                k: v for k, v in DEFAULT_SETTINGS.items() if k not in ("envelope", "max_bins", "tile_spaxels")
            },
            "templates": int(_FULL_FIT["fit"].ages_yr.size * _FULL_FIT["fit"].logzsol.size),
            "s_per_spectrum": round(float(np.mean(full_seconds)), 3),
            "spectra_per_s": round(full_rate, 4),
            "accuracy": {q: summary_metrics(np.array([f[q] for f in full_fits]), truth[q]) for q in QUANTITIES},
        }

    result = {
        "n_spectra": int(test.size),
        "templates": f"{templates.shape[1]} age bins x {templates.shape[2]} metallicities = "
        f"{templates.shape[1] * templates.shape[2]}",
        "regul": args.regul,
        "processes": args.processes,
        "ppxf_s_per_spectrum": round(ppxf_s, 3),
        "ppxf_spectra_per_s": round(ppxf_rate, 3),
        "cnn_spectra_per_s": round(cnn_all_cores, 1),
        "speed_ratio": round(cnn_all_cores / ppxf_rate, 1),
        "speed_ratio_minimal": round(cnn_all_cores / ppxf_rate, 1),
        "speed_ratio_full_fit": round(cnn_all_cores / full["spectra_per_s"], 1) if full else None,
        "full_fit": full,
        "cnn_spectra_per_s_one_core": round(cnn_one_core, 1),
        # the CNN as pPXF is run: one single-threaded process per core
        "cnn_spectra_per_s_processes": round(cnn_processes, 1),
        "speed_ratio_processes": round(cnn_processes / ppxf_rate, 1),
        "int8": args.int8,
        # the network's arithmetic, and how much of the CPU's FP32 GEMM rate its throughput
        # reaches (encoding, rebinning and the rest of the predictor included in the rate)
        "network_mflop_per_spectrum": round(flops / 1e6, 3),
        "cnn_gflop_per_s": round(flops * cnn_all_cores / 1e9, 2),
        "gemm_gflop_per_s": round(gemm_peak, 1),
        "fraction_of_gemm_rate": round(flops * cnn_all_cores / 1e9 / gemm_peak, 3),
        # inference time with the per-bin posterior heads over the time without them
        # (the reference model's goal: <= 2)
        "posterior_cost": posterior_cost,
        "speed_ratio_one_core": round(cnn_one_core * ppxf_s, 1),
        "ppxf": {q: summary_metrics(np.array([f[q] for f in fits]), data[q]) for q in QUANTITIES},
        "cnn": {q: summary_metrics(np.asarray(cnn[q]), data[q], np.asarray(cnn[f"{q}_err"])) for q in QUANTITIES},
        "median_snr": float(np.median(data["snr"])),
        "model": args.model,
        "cnn_batch_size": args.batch_size,
    }
    report(json.loads(json.dumps(result, default=float)), args.save)


if __name__ == "__main__":
    main()
