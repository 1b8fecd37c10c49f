"""How fast a network of another architecture would run in the shipped predictor, before training it.

Usage:
    python bench/architecture_speed.py [--model reference] [--candidate config/reference_student.yaml ...]
        [--architecture '{"stem_stride": 8, "stem_kernel": 16}' ...] [--n 8192] [--save NAME]

A candidate is the shipped model's file with its network replaced by one of the candidate's
architecture (``model.architecture`` of a config file, or a JSON mapping of ``ModelConfig``
settings) and random weights: its calibration, OOD reference and heads' layout stay, so the
predictor runs exactly as it would for the trained network (the time of a forward pass does not
depend on the weights' values). For the shipped model and every candidate, side by side in one
run on the same spectra: floating-point operations per spectrum (torch's FLOP counter, a
multiply-add counts 2), parameters, and spectra per second through ``predict_normalised`` on the
whole CPU and on one thread (``ppxf_vs_cnn.cnn_rate``: best of three passes, encoding and
calibration included, the predictor's default precision). Ratios are against the shipped model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import predictor_profile
import torch
import yaml
from ppxf_vs_cnn import cnn_rate, flops_per_spectrum
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

import sfh_pipeline
from sfh_pipeline.ml.model import ModelConfig, SFHNet, read_model_payload


def synthetic_inputs(n_spectra: int, n_wave: int, n_filters: int) -> dict[str, np.ndarray]:
    """``predictor_profile``'s synthetic spectra with fluxes, as ``predict_normalised`` takes them."""
    flux, error, mask = predictor_profile.synthetic_inputs(n_wave, n_spectra)
    phot = np.ones((n_spectra, n_filters), np.float32)
    return {"flux": flux, "error": error, "mask": mask, "phot": phot, "phot_error": np.full_like(phot, 0.05)}


def candidate_file(payload: dict, architecture: dict, seed: int, where: Path) -> Path:
    """The shipped model's payload with a randomly initialised network of ``architecture``."""
    config = {**payload["model_config"], **architecture}
    torch.manual_seed(seed)
    net = SFHNet(ModelConfig.from_dict(config))
    path = where / f"candidate_{seed}.pt"
    torch.save({**payload, "model_config": net.config.to_dict(), "state_dict": net.state_dict()}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reference", help="the shipped model: a file or a catalog name")
    parser.add_argument(
        "--candidate", action="append", default=[], help="a config file whose model.architecture to time"
    )
    parser.add_argument("--architecture", action="append", default=[], help="a JSON mapping of ModelConfig settings")
    parser.add_argument("--n", type=int, default=8192, help="spectra per timed pass")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    shipped = sfh_pipeline.load_predictor(args.model, device="cpu")
    payload = read_model_payload(shipped.path)
    candidates = {f"shipped ({args.model})": None}
    for path in args.candidate:
        candidates[path] = yaml.safe_load(Path(path).read_text())["model"].get("architecture", {})
    for text in args.architecture:
        candidates[text] = json.loads(text)

    config = shipped.model_config
    data = synthetic_inputs(args.n, config.n_wave, config.n_filters)
    threads = torch.get_num_threads()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (name, architecture) in enumerate(candidates.items()):
            path = shipped.path if architecture is None else candidate_file(payload, architecture, seed, Path(tmp))
            predictor = sfh_pipeline.load_predictor(path, device="cpu")
            net = SFHNet(predictor.model_config)
            rows[name] = {
                "architecture": architecture or {},
                "mflop_per_spectrum": round(flops_per_spectrum(net) / 1e6, 3),
                "parameters": sum(p.numel() for p in net.parameters()),
                "spectra_per_s_all_cores": round(cnn_rate(predictor, data, args.batch_size, threads, args.n), 1),
                "spectra_per_s_one_thread": round(cnn_rate(predictor, data, args.batch_size, 1, args.n), 1),
            }
    base = rows[f"shipped ({args.model})"]
    for row in rows.values():
        row["flop_ratio"] = round(base["mflop_per_spectrum"] / row["mflop_per_spectrum"], 2)
        row["speed_ratio_all_cores"] = round(row["spectra_per_s_all_cores"] / base["spectra_per_s_all_cores"], 2)
        row["speed_ratio_one_thread"] = round(row["spectra_per_s_one_thread"] / base["spectra_per_s_one_thread"], 2)
    report(
        {"threads": threads, "batch_size": args.batch_size, "spectra_per_pass": args.n, "candidates": rows}, args.save
    )


if __name__ == "__main__":
    main()
