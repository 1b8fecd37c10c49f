"""Ways to run a shipped network faster on this CPU, and what each does to its answers.

Usage:
    python bench/inference_speed.py [--model reference] [--trainset resources/trainsets/full/trainset.zarr]
        [--n 4096] [--timing-n 16384] [--save NAME]

For each way of running the network, side by side in one run on the same spectra: spectra per
second through the predictor (``predict_normalised``; best of three passes over at least
``--timing-n`` test spectra, encoding included) with the whole CPU and with one thread, and the
change of its answers against float32: on ``--n`` spectra of the training set's test split
(median and largest |change| of the four summaries, dex, and the scatter against the truth of
LW log age and LW log Z) and on the real SDSS and MaNGA spectra of the embedded default (median
and largest |change| of LW log age and LW log Z, dex; ``sfh_pipeline.spectra_validation``).

Ways: ``float32`` (the predictor as it loads), ``int8`` (dynamic quantisation of the dense
layers, ``load_predictor(int8=True)``), ``bf16`` (the network under CPU autocast to bfloat16,
where the CPU has it), ``compile`` (``torch.compile`` of the network), and float32 at other
batch sizes. A way is kept for the shipped predictor only if it is faster and moves the real
answers by <= 0.02 dex (median) and the test-split scatter by <= 0.005 dex.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml
import zarr
from ppxf_vs_cnn import cnn_rate  # the same timing as the pPXF comparison's
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

import sfh_pipeline
from sfh_pipeline.evaluation import summary_metrics

KEYS = ("lw_age", "mw_age", "lw_logz", "mw_logz")
REPO = Path(__file__).resolve().parents[1]


class Autocast(torch.nn.Module):
    """A network run under CPU autocast to ``dtype``; its outputs back in float32."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.net, self.dtype = net, dtype

    def forward(self, spectrum, photometry):
        with torch.autocast("cpu", dtype=self.dtype):
            out = self.net(spectrum, photometry)
        return {k: v.float() for k, v in out.items()}


def real_inputs(config_path: Path) -> list[tuple]:
    """(name, spectrum, flux, error, bad) of every real spectrum of the embedded default's sets."""
    from sfh_pipeline.spectra_validation import corrected_spectrum

    config = yaml.safe_load(config_path.read_text())
    out = []
    for spectra in config["real_spectra"].values():
        for name, entry in spectra.items():
            path = REPO / entry["file"]
            if path.exists():
                out.append((name, *corrected_spectrum({**entry, "file": path}, name)))
    return out


def real_answers(predictor, inputs, settings) -> dict[str, np.ndarray]:
    from sfh_pipeline.spectra_validation import network_answer

    answers = [network_answer(predictor, *row[1:], settings) for row in inputs]
    return {k: np.array([a[k] for a in answers], float) for k in ("lw_age", "lw_logz")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reference", help="a model file or a catalog name")
    parser.add_argument("--trainset", default="resources/trainsets/full/trainset.zarr")
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"), help="for the real spectra")
    parser.add_argument("--n", type=int, default=4096, help="test-split spectra compared")
    parser.add_argument("--timing-n", type=int, default=16384, help="spectra per timed pass")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    group = zarr.open_group(args.trainset, mode="r")
    test = np.flatnonzero(np.asarray(group["split"][:]) == 2)[: args.n]
    data = {
        k: np.asarray(group[k].get_orthogonal_selection((test,)))
        for k in ("flux", "error", "mask", "phot", "phot_error", *KEYS)
    }
    threads = torch.get_num_threads()
    config = yaml.safe_load(Path(args.config).read_text())
    settings = {k: v for k, v in config["validate"].items() if k != "second_ssp"}
    real = real_inputs(Path(args.config))

    def load(**kwargs):
        return sfh_pipeline.load_predictor(args.model, device="cpu", **kwargs)

    ways: dict[str, tuple] = {"float32": (load(), args.batch_size), "int8": (load(int8=True), args.batch_size)}
    bf16 = load()
    bf16.net = Autocast(bf16.net, torch.bfloat16)
    ways["bf16"] = (bf16, args.batch_size)
    compiled = load()
    compiled.net = torch.compile(compiled.net)
    ways["compile"] = (compiled, args.batch_size)
    for batch in (256, 4096):
        ways[f"float32_batch{batch}"] = (load(), batch)

    reference = ways["float32"][0].predict_normalised(
        *(data[k] for k in ("flux", "error", "mask", "phot", "phot_error")), batch_size=args.batch_size
    )
    reference_real = real_answers(ways["float32"][0], real, settings)
    results = {}
    for name, (predictor, batch) in ways.items():
        answer = predictor.predict_normalised(
            *(data[k] for k in ("flux", "error", "mask", "phot", "phot_error")), batch_size=batch
        )
        change = {k: np.abs(answer[k] - reference[k]) for k in KEYS}
        real_answer = real_answers(predictor, real, settings)
        real_change = {k: np.abs(real_answer[k] - reference_real[k]) for k in real_answer}
        results[name] = {
            "batch_size": batch,
            "spectra_per_s": round(cnn_rate(predictor, data, batch, threads, args.timing_n), 1),
            "spectra_per_s_one_thread": round(cnn_rate(predictor, data, batch, 1, args.timing_n), 1),
            "test_split_change_dex": {
                k: {"median": float(np.median(v)), "max": float(np.max(v))} for k, v in change.items()
            },
            "test_split_scatter_dex": {
                k: summary_metrics(np.asarray(answer[k]), data[k])["scatter_dex"] for k in ("lw_age", "lw_logz")
            },
            "real_change_dex": {
                k: {"median": float(np.median(v)), "max": float(np.max(v))} for k, v in real_change.items()
            },
        }
    base = results["float32"]
    for r in results.values():
        r["speedup"] = round(r["spectra_per_s"] / base["spectra_per_s"], 3)
        r["speedup_one_thread"] = round(r["spectra_per_s_one_thread"] / base["spectra_per_s_one_thread"], 3)
        r["keeps_answers"] = bool(
            max(v["median"] for v in r["real_change_dex"].values()) <= 0.02
            and max(
                abs(r["test_split_scatter_dex"][k] - base["test_split_scatter_dex"][k]) for k in ("lw_age", "lw_logz")
            )
            <= 0.005
        )
    figures = {
        "model": str(args.model),
        "n_test": int(test.size),
        "n_real": len(real),
        "threads": threads,
        "cpu_has_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None,
        "ways": results,
    }
    report(figures, args.save)


if __name__ == "__main__":
    main()
