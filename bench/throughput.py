"""Network throughput on this machine's CPU, printed as JSON.

Usage:  python bench/throughput.py [--model results/models/demo/model.pt] [--save NAME]

Training: forward + backward + optimiser step of the default architecture on random
inputs of the training shape (samples/s). Inference: forward passes without gradients at
several batch sizes (spectra/s), of the given model file if any, else a fresh network.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.model import LossWeights, ModelConfig, SFHNet, load_model_file, loss_terms, total_loss


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="results/models/demo/model.pt")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    if Path(args.model).exists():
        net, _ = load_model_file(args.model)
        source = args.model
    else:
        net, source = SFHNet(ModelConfig()).eval(), "untrained default architecture"
    config = net.config
    result = {
        "model": source,
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in net.parameters()),
    }

    train_net = SFHNet(config).train()
    optimiser = torch.optim.AdamW(train_net.parameters(), lr=1e-3)
    batch = 64
    spectrum = torch.randn(batch, 3, config.n_wave)
    photometry = torch.randn(batch, 3 * config.n_filters)
    targets = {
        "sfh": torch.softmax(torch.randn(batch, config.n_bins), 1),
        "logzsol": torch.zeros(batch, config.n_bins),
        "summary": torch.full((batch, 4), 9.0),
    }

    def step():
        loss = total_loss(loss_terms(train_net(spectrum, photometry), targets), LossWeights())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    result["train_samples_per_s"] = round(batch / timed(step, args.repeats), 1)
    result["train_batch_size"] = batch

    inference = {}
    net.eval()
    for size in (1, 16, 128, 1024):
        s = torch.randn(size, 3, config.n_wave)
        p = torch.randn(size, 3 * config.n_filters)
        with torch.no_grad():
            seconds = timed(lambda s=s, p=p: net(s, p), max(1, args.repeats if size <= 128 else 2))
        inference[str(size)] = round(size / seconds, 1)
    result["inference_spectra_per_s_by_batch_size"] = inference
    report(result, args.save)


if __name__ == "__main__":
    main()
