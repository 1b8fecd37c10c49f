"""What one training epoch costs, measured on this machine, and what it would cost on a GPU.

Usage:
    python bench/training_cost.py [--trainset resources/trainsets/full/trainset.zarr]
        [--architecture '{"stem_stride": 2}'] [--batch-size 128] [--steps 20]
        [--gpu-tflops 19.5] [--gpu-efficiency 0.3] [--save NAME]

Measured here, side by side on the same batches of the training set:

* ``loader_spectra_per_s``: the data path alone (zarr chunks, shuffling, band dropout,
  tensors), as :func:`sfh_pipeline.training.iterate_batches` feeds the network;
* ``cpu_step_spectra_per_s``: forward + backward + optimiser step on the CPU (torch's threads);
* ``train_flops_per_spectrum``: the floating-point operations of forward + backward, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions).

Estimated, not measured (no GPU here): the GPU compute time of an epoch is its FLOPs over
``gpu_tflops x gpu_efficiency`` (defaults: an A100's 19.5 TFLOP/s in FP32, of which small 1-d
convolutions use about 30 %; mixed precision would be faster), and an epoch cannot be faster
than the data path, which runs on the CPU beside the GPU: the estimate is the larger of the two,
with the loader figure of this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from provenance import report  # bench/provenance.py: this script's folder is on sys.path
from torch.utils.flop_counter import FlopCounterMode

from sfh_pipeline.model import LossWeights, ModelConfig, SFHNet, loss_terms, total_loss
from sfh_pipeline.training import TrainConfig, TrainsetReader, iterate_batches


def batches(reader: TrainsetReader, batch_size: int, n_batches: int) -> tuple[list[dict[str, torch.Tensor]], float]:
    """The first ``n_batches`` training batches of epoch 0, and the seconds the loader took for them
    (the shuffle buffer reads whole chunks ahead: time many batches, not a few)."""
    out = []
    start = time.perf_counter()
    for batch, _ in iterate_batches(
        reader, "train", batch_size, 0, 1, train=True, config=TrainConfig(), max_batches=n_batches
    ):
        out.append(batch)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainset", default="resources/trainsets/full/trainset.zarr")
    parser.add_argument("--architecture", default='{"stem_stride": 2}', help="model.architecture, as JSON")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="training steps timed")
    parser.add_argument("--loader-batches", type=int, default=300, help="batches the data path is timed over")
    parser.add_argument("--gpu-tflops", type=float, default=19.5, help="the GPU's peak FP32 TFLOP/s")
    parser.add_argument("--gpu-efficiency", type=float, default=0.3, help="fraction of the peak reached")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    reader = TrainsetReader(args.trainset)
    attrs = reader.attrs
    config = ModelConfig(
        **{
            **json.loads(args.architecture),
            "n_wave": reader.wavelength_aa.size,
            "n_filters": len(attrs["filters"]),
            "n_bins": len(attrs["age_bin_edges_yr"]) - 1,
            "logz_range": tuple(attrs["logzsol_range"]),
        }
    )
    torch.manual_seed(0)
    net = SFHNet(config)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    data, loader_s = batches(reader, args.batch_size, max(args.loader_batches, args.steps))
    loader_rate = sum(b["sfh"].shape[0] for b in data) / loader_s
    data = data[: args.steps]
    n_spectra = sum(b["sfh"].shape[0] for b in data)

    def step(batch):
        terms = loss_terms(net(batch["spectrum"], batch["photometry"]), batch)
        optimiser.zero_grad(set_to_none=True)
        total_loss(terms, LossWeights()).backward()
        optimiser.step()

    step(data[0])  # first-call allocations out of the timing
    start = time.perf_counter()
    for batch in data:
        step(batch)
    step_s = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:
        step(data[0])
    flops_per_spectrum = counter.get_total_flops() / data[0]["sfh"].shape[0]

    train_spectra = reader.count("train", list(range(reader.n_chunks)))
    gpu_compute_s = train_spectra * flops_per_spectrum / (args.gpu_tflops * 1e12 * args.gpu_efficiency)
    result = {
        "trainset": args.trainset,
        "train_spectra_per_epoch": int(train_spectra),
        "architecture": json.loads(args.architecture),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "measured": {
            "loader_spectra_per_s": round(loader_rate, 1),
            "cpu_step_spectra_per_s": round(n_spectra / step_s, 1),
            "cpu_epoch_s": round(train_spectra / min(loader_rate, n_spectra / step_s), 1),
            "train_flops_per_spectrum": float(f"{flops_per_spectrum:.4g}"),
        },
        "estimated_gpu": {
            "assumed_tflops": args.gpu_tflops,
            "assumed_efficiency": args.gpu_efficiency,
            "compute_epoch_s": round(gpu_compute_s, 1),
            "data_path_epoch_s_with_these_cpus": round(train_spectra / loader_rate, 1),
            "epoch_s": round(max(gpu_compute_s, train_spectra / loader_rate), 1),
        },
    }
    report(json.loads(json.dumps(result, default=float)), args.save)


if __name__ == "__main__":
    main()
