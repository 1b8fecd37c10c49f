"""Training: chunk-wise reading of the zarr training set, band dropout, CPU/GPU/DDP, resumable.

* Data are read one zarr chunk at a time (never the whole set); the chunk order and the
  shuffling inside a buffer of chunks depend only on (seed, epoch), so an interrupted run
  that resumes sees exactly the batches it would have seen.
* The device is chosen automatically (CUDA, then Apple MPS, then CPU); on CUDA the forward
  pass runs in mixed precision (``torch.autocast`` + ``GradScaler``). Under ``torchrun`` (or
  SLURM with ``srun torchrun``) the model is wrapped in DistributedDataParallel (NCCL on
  GPUs, gloo on CPUs) and every rank reads its own chunks.
* After every epoch a checkpoint (model, optimiser, scheduler, scaler, all RNG states,
  epoch, early-stopping state, history) is written atomically; a restarted job resumes
  from it and ends with the same weights as an uninterrupted run.
* The weights validated, kept and shipped may be an exponential moving average of the weights
  over optimiser steps (``weight_average_half_life_epochs``, via ``torch.optim.swa_utils``):
  at a learning rate still high the last weights swing from epoch to epoch, and on the real
  cube their answers moved by 0.25 dex in LW age between epochs (docs/pipeline.md).
* A network may learn from a teacher network's predictions beside the truth
  (``teacher``, knowledge distillation): a small fast network from the reference.
* The uncertainties of the summary heads are calibrated on the validation split after
  training: each predicted sigma is multiplied by the factor that makes 68.27 % of the
  validation truths fall within +-1 sigma.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import logging
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import zarr

from ..core.atomic import atomic_path, write_json_atomically
from ..synth.priors import formation_times
from ..synth.trainset import renoised, stored_noise
from .model import (
    ENSEMBLE_FORMAT,
    FORMATION_FRACTIONS,
    LOSS_TERMS,
    MODEL_FORMAT,
    SUMMARY_KEYS,
    LossWeights,
    ModelConfig,
    NetworkMixture,
    SFHNet,
    distillation_loss,
    encode_photometry,
    encode_spectrum,
    load_model_file,
    load_restricted,
    loss_terms,
    network_of_payload,
    pick_device,
    posterior_targets,
    read_model_payload,
    settings_from_dict,
    total_loss,
)

log = logging.getLogger("sfh_pipeline.training")  # the name it had before the layer folders

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (config: model.training)."""

    seed: int = 1
    batch_size: int = 128
    max_epochs: int = 30
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    patience: int = 6
    grad_clip: float = 1.0
    band_keep_probability: float = 0.7
    no_bands_probability: float = 0.1
    shuffle_buffer_chunks: int = 2
    max_train_batches_per_epoch: int | None = None
    # a budget of training wall time (hours, summed over all resumptions): training stops after
    # the epoch that passes it and writes the best model so far. Like patience, a stop condition:
    # changing it resumes the run instead of starting another.
    max_hours: float | None = None
    # stop after this many epochs although the schedule (max_epochs) goes on: the learning rate
    # is then still high. Like max_hours a stop condition, so raising it continues the run; the
    # reference recipe stops at 14 of its 60 epochs (config/reference_ensemble.yaml)
    stop_after_epochs: int | None = None
    # draw each training spectrum's S/N and noise anew every epoch (trainset.renoised) instead
    # of showing the one realisation stored, so the network cannot learn the noise by heart.
    # Measured (docs/pipeline.md): the same at 10 epochs, far better beyond (no overfitting).
    redraw_noise: bool = True
    # half-life (epochs) of an exponential moving average of the weights, validated and shipped
    # instead of the last weights; early on it is shortened to a tenth of the steps taken, so
    # the random start is forgotten. For runs stopped before their learning rate has decayed
    # (max_hours, patience); a run that ends its schedule gains nothing measurable (the demo,
    # docs/pipeline.md), so None (off) by default. It leaves the optimisation itself alone, so
    # changing it resumes a run.
    weight_average_half_life_epochs: float | None = None
    # a model file (model.pt) of this same run to continue from when its checkpoint is gone (a
    # new machine): its weights, epochs and history are taken up, the schedule goes on from its
    # epoch after a fresh warm-up of warmup_epochs (the optimiser's moments start anew). The
    # reference model's training continues this way (config/reference.yaml). max_epochs may
    # differ from the file's run: the cosine schedule then goes on over the new length.
    warm_start: str | None = None
    # a checkpoint (checkpoints/last.pt) of this same run kept elsewhere, e.g. committed beside a
    # model catalog entry, resumed exactly (optimiser, schedule, random state) when out_dir has
    # no checkpoint of its own: a training of hours continues on a new machine
    resume_from: str | None = None
    # a model file (model.pt) of another, usually larger, network, or an ensemble file (its
    # members' mixture), whose predictions on each training batch this network learns beside
    # the truth (knowledge distillation; the term's weight is model.loss.distillation). Same
    # wavelengths, bands and age bins required.
    teacher: str | None = None
    # a model file (model.pt) of another run whose weights this run starts from instead of a
    # random initialisation (fine-tuning, e.g. a shipped model on a training set with another
    # prior); the run is new otherwise: its own schedule, from epoch 0. Same architecture and a
    # training set with the same wavelengths, bands and age bins required.
    initial_weights: str | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        return settings_from_dict(cls, values, "training setting")


# ----------------------------------------------------------------------------- data


class TrainsetReader:
    """Reads the training set of :mod:`sfh_pipeline.trainset` one zarr chunk at a time."""

    def __init__(self, store: str | os.PathLike) -> None:
        self.store = Path(store)
        self.group = zarr.open_group(self.store, mode="r")
        attrs = self.group.attrs
        if "split" not in self.group or "chunk_size" not in attrs:
            raise ValueError(f"{store} is not a finalized training set (run the trainset stage)")
        self.attrs = dict(attrs)
        self.chunk_size = int(attrs["chunk_size"])
        self.n = int(attrs["n_spectra"])
        self.n_chunks = self.n // self.chunk_size
        self.split = np.asarray(self.group["split"][:])
        self.wavelength_aa = np.asarray(self.group["wavelength_aa"][:])

    def count(self, split: str, chunks: list[int]) -> int:
        code = SPLIT_CODES[split]
        return int(
            sum(np.count_nonzero(self.split[c * self.chunk_size : (c + 1) * self.chunk_size] == code) for c in chunks)
        )

    def read_chunk(self, chunk: int, split: str, redraw: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """The samples of one chunk that belong to ``split``, as numpy arrays.

        With ``redraw`` the spectra get a new S/N and new noise drawn from it (:func:`renoised`).
        """
        sl = slice(chunk * self.chunk_size, (chunk + 1) * self.chunk_size)
        keep = self.split[sl] == SPLIT_CODES[split]
        names = ("flux", "error", "mask", "phot", "phot_error", "sfh", "logzsol", "snr", *SUMMARY_KEYS)
        arrays = {name: np.asarray(self.group[name][sl])[keep] for name in names}
        if redraw is not None:
            noise, phot_noise = stored_noise(self.attrs, chunk)
            arrays = renoised(arrays, noise[keep], phot_noise[keep], redraw, self.attrs["config"], self.wavelength_aa)
        arrays["formation"] = formation_times(arrays["sfh"], self.attrs["age_bin_edges_yr"], FORMATION_FRACTIONS)
        return arrays


def shard_chunks(n_chunks: int, seed: int, epoch: int, rank: int, world: int, shuffle: bool) -> list[int]:
    """The chunks rank ``rank`` reads in ``epoch``: a (seed, epoch)-shuffled order, dealt round-robin."""
    order = np.arange(n_chunks)
    if shuffle:
        np.random.default_rng([seed, epoch, 7]).shuffle(order)
    return [int(c) for c in order[rank::world]]


def make_batch(arrays: dict[str, np.ndarray], present: np.ndarray) -> dict[str, torch.Tensor]:
    """Network inputs and targets of a batch of samples."""
    return {
        "spectrum": torch.from_numpy(encode_spectrum(arrays["flux"], arrays["error"], arrays["mask"])),
        "photometry": torch.from_numpy(encode_photometry(arrays["phot"], arrays["phot_error"], present)),
        "sfh": torch.from_numpy(arrays["sfh"].astype(np.float32)),
        "logzsol": torch.from_numpy(arrays["logzsol"].astype(np.float32)),
        "summary": torch.from_numpy(np.stack([arrays[k] for k in SUMMARY_KEYS], 1).astype(np.float32)),
        "formation": torch.from_numpy(arrays["formation"].astype(np.float32)),
    }


def band_dropout(rng: np.random.Generator, n: int, n_filters: int, keep: float, none: float) -> np.ndarray:
    """Random band availability: each band kept with probability ``keep``; all dropped with ``none``."""
    present = rng.uniform(size=(n, n_filters)) < keep
    present[rng.uniform(size=n) < none] = False
    return present


def iterate_batches(
    reader: TrainsetReader,
    split: str,
    batch_size: int,
    epoch: int,
    seed: int,
    *,
    rank: int = 0,
    world: int = 1,
    train: bool = True,
    config: TrainConfig | None = None,
    max_batches: int | None = None,
) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]]:
    """Yield (batch tensors, raw arrays) of ``split``, reading chunks in a prefetching thread.

    Training batches are shuffled within a buffer of chunks and get band dropout (and, with
    ``config.redraw_noise``, a new S/N and noise per (seed, epoch, chunk)); every rank yields
    the same number of batches (DDP needs equal steps), the rest is dropped. Evaluation
    batches keep every band and every sample, in order, as stored.
    """
    config = config or TrainConfig()
    chunks = shard_chunks(reader.n_chunks, seed, epoch, rank, world, shuffle=train)
    rng = np.random.default_rng([seed, epoch, rank, 11])
    n_filters = len(reader.attrs["filters"])
    if train:
        per_rank = [
            reader.count(split, shard_chunks(reader.n_chunks, seed, epoch, r, world, True)) for r in range(world)
        ]
        limit = min(per_rank) // batch_size
        if max_batches is not None:
            limit = min(limit, max_batches)
    else:
        limit = math.inf
    buffer_size = max(1, config.shuffle_buffer_chunks) if train else 1
    redraw = train and config.redraw_noise

    def read(chunk: int) -> dict[str, np.ndarray]:
        noise_rng = np.random.default_rng([seed, epoch, chunk, 13]) if redraw else None
        return reader.read_chunk(chunk, split, noise_rng)

    yielded = 0
    pending: dict[str, np.ndarray] | None = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(read, c) for c in chunks[:buffer_size]]
        next_chunk = buffer_size
        while futures and yielded < limit:
            arrays = [f.result() for f in futures]
            futures = [pool.submit(read, c) for c in chunks[next_chunk : next_chunk + buffer_size]]
            next_chunk += buffer_size
            block = {k: np.concatenate(([pending[k]] if pending else []) + [a[k] for a in arrays]) for k in arrays[0]}
            n = len(block["flux"])
            order = rng.permutation(n) if train else np.arange(n)
            last = futures == []
            stop = n if (last and not train) else (n // batch_size) * batch_size
            for start in range(0, stop, batch_size):
                if yielded >= limit:
                    return
                idx = order[start : start + batch_size]
                sub = {k: v[idx] for k, v in block.items()}
                present = (
                    band_dropout(rng, len(idx), n_filters, config.band_keep_probability, config.no_bands_probability)
                    if train
                    else np.ones((len(idx), n_filters), bool)
                )
                yield make_batch(sub, present), sub
                yielded += 1
            pending = {k: v[order[stop:]] for k, v in block.items()} if stop < n else None


# ----------------------------------------------------------------------------- DDP


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return rank, world, local_rank


def _all_reduce_sum(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


# ----------------------------------------------------------------------------- checkpoints


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A training checkpoint (``checkpoints/last.pt``). Only tensors, plain data and numpy arrays
    (the random state) are read (:func:`sfh_pipeline.model.load_restricted`): checkpoints are
    committed and continued on other machines, so one holding any other Python object is
    refused before that object is made, as model files are."""
    return load_restricted(path, map_location, "training checkpoint", arrays=True)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomically(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save via a temporary file and a rename (a killed job never leaves half a file)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _restore_model(net: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {path} was written by another architecture than model settings now "
            f"configured; delete it or restore the settings ({str(err).splitlines()[0]})"
        ) from err


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class LearningRateSchedule:
    """Factor on the learning rate at optimiser step ``step``: a linear warm-up over ``warmup``
    steps, then a cosine decay to 5 % at step ``total``; after a warm start at step ``restart``
    a second linear warm-up of ``warmup`` steps. A callable object, not a function, so that
    LambdaLR keeps ``restart`` in its state dict (and so in checkpoints)."""

    warmup: int
    total: int
    restart: int = 0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        factor = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
        if self.restart:
            factor *= min(1.0, (step - self.restart + 1) / self.warmup)
        return factor


def evaluate_split(
    net: torch.nn.Module,
    reader: TrainsetReader,
    split: str,
    device: torch.device,
    batch_size: int = 256,
    rank: int = 0,
    world: int = 1,
    teacher: torch.nn.Module | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Mean loss terms over a split (with a ``teacher``, its distillation term too) and the raw
    predictions (this rank's share)."""
    net.eval()
    names = LOSS_TERMS + (("distillation",) if teacher is not None else ())
    sums = torch.zeros(len(names) + 1, dtype=torch.float64)
    preds: dict[str, list[np.ndarray]] = {
        k: [] for k in ("sfh", "logz", "summary", "summary_sigma", "spectral_features", "quantiles")
    }
    truth: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for batch, raw in iterate_batches(reader, split, batch_size, 0, 0, rank=rank, world=world, train=False):
            inputs = batch["spectrum"].to(device), batch["photometry"].to(device)
            out = net(*inputs)
            terms = loss_terms(out, {k: batch[k].to(device) for k in ("sfh", "logzsol", "summary", "formation")})
            if teacher is not None:
                terms["distillation"] = distillation_loss(out, teacher(*inputs))
            n = len(raw["flux"])
            sums += torch.tensor([n, *[float(v) * n for v in terms.values()]], dtype=torch.float64)
            preds["sfh"].append(torch.softmax(out["sfh_logits"].float(), 1).cpu().numpy())
            preds["logz"].append(out["logz"].float().cpu().numpy())
            preds["summary"].append(out["summary"].float().cpu().numpy())
            preds["summary_sigma"].append(torch.exp(out["summary_log_sigma"].float()).cpu().numpy())
            preds["spectral_features"].append(out["spectral_features"].float().cpu().numpy())
            if "quantiles" in out:
                preds["quantiles"].append(out["quantiles"].float().cpu().numpy())
            for key in ("sfh", "logzsol", "snr", "formation", *SUMMARY_KEYS):
                truth.setdefault(key, []).append(raw[key])
    sums = _all_reduce_sum(sums, world)
    means = {name: float(sums[i + 1] / max(sums[0], 1)) for i, name in enumerate(names)}
    collected = {f"pred_{k}": np.concatenate(v) for k, v in preds.items() if v}
    collected.update({f"true_{k}": np.concatenate(v) for k, v in truth.items()})
    return means, collected


def calibrate_sigmas(predictions: dict[str, np.ndarray]) -> dict[str, float]:
    """Factor per summary quantity making 68.27 % of |truth - mean| <= factor * sigma."""
    scales = {}
    for i, key in enumerate(SUMMARY_KEYS):
        z = (
            np.abs(predictions[f"true_{key}"] - predictions["pred_summary"][:, i])
            / predictions["pred_summary_sigma"][:, i]
        )
        scales[key] = float(np.quantile(z, 0.6827)) if z.size else 1.0
    return scales


def calibrate_quantiles(predictions: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Conformal widening of the posterior heads' central intervals (Romano et al. 2019), per
    target: the amount by which [q16, q84] (key "68") and [q2.5, q97.5] ("95") must be widened
    on each side to cover 68.27 % and 95.45 % of the truths of ``predictions`` (validation split).
    Negative values narrow an interval that was too wide."""
    values, counts = posterior_targets(predictions)
    q = predictions["pred_quantiles"]
    out = {}
    for name, (lo, hi), level in (("68", (1, 3), 0.6827), ("95", (0, 4), 0.9545)):
        score = np.maximum(q[..., lo] - values, values - q[..., hi])
        out[name] = [
            float(np.quantile(score[counts[:, t], t], level)) if counts[:, t].any() else 0.0
            for t in range(values.shape[1])
        ]
    return out


def ood_reference(features: np.ndarray, shrinkage: float = 0.05, quantile: float = 0.99) -> dict[str, Any]:
    """The reference of the out-of-distribution score: mean and whitening matrix of the spectral
    embeddings of held-out training-set spectra (covariance shrunk towards its mean variance by
    ``shrinkage``, so that it inverts), and the ``quantile`` of their Mahalanobis distances.

    :meth:`sfh_pipeline.predict.Predictor.predict_normalised` divides a spectrum's distance by
    that quantile: OOD = 1 is as unusual as the 1 % most unusual training-like spectra.
    """
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    whitening = np.linalg.cholesky(np.linalg.inv(cov)).T  # |whitening @ d|^2 = d^T cov^-1 d
    distance = np.linalg.norm((x - mean) @ whitening.T, axis=1)
    return {
        "mean": mean.tolist(),
        "whitening": whitening.tolist(),
        "distance_quantile": float(np.quantile(distance, quantile)),
        "quantile": quantile,
        "n": int(x.shape[0]),
    }


def trainset_velocity_template(reader: TrainsetReader, max_spectra: int = 4000) -> list[float]:
    """A rest-frame template for velocity refinement, on the training grid: the median normalised
    flux of validation spectra with S/N > 30 and sigma < 120 km/s (their residual velocities of
    at most a few tens of km/s only broaden it slightly)."""
    keep = np.flatnonzero(reader.split == SPLIT_CODES["validation"])
    snr = np.asarray(reader.group["snr"][:])[keep]
    sigma = np.asarray(reader.group["sigma_kms"][:])[keep]
    chosen = keep[(snr > 30) & (sigma < 120)][:max_spectra]
    if chosen.size < 10:
        chosen = keep[:max_spectra]
    flux = np.asarray(reader.group["flux"].get_orthogonal_selection((chosen, slice(None))), dtype=np.float64)
    return np.nanmedian(flux, axis=0).tolist()


@dataclasses.dataclass
class _Optimisation:
    """The network and what updates it, on one rank: ``net`` (DDP-wrapped when world > 1) and its
    ``module``, optimiser, learning-rate schedule and AMP loss scaler."""

    net: torch.nn.Module
    module: SFHNet
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    rank: int
    world: int
    average: torch.optim.swa_utils.AveragedModel | None = None
    teacher: torch.nn.Module | None = None

    @property
    def validated(self) -> torch.nn.Module:
        """The weights that are validated and kept: the moving average, else the last weights."""
        return self.module if self.average is None else self.average.module

    def state_dicts(self) -> dict[str, Any]:
        return {
            "model": self.module.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "weight_average": None if self.average is None else self.average.state_dict(),
        }


def moving_average(module: torch.nn.Module, half_life_steps: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``module``'s weights, updated by ``update_parameters``
    after each optimiser step: decay per step ``0.5 ** (1 / half_life_steps)``, but at most
    ``(1 + n) / (10 + n)`` after n updates, so that early on it averages about the last tenth
    of the steps instead of remembering the random start."""
    decay = 0.5 ** (1.0 / half_life_steps)

    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, weight)

    return torch.optim.swa_utils.AveragedModel(module, multi_avg_fn=average, use_buffers=True)


def train(
    trainset_store: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_config: ModelConfig,
    train_config: TrainConfig,
    loss_weights: LossWeights = LossWeights(),
    *,
    model_name: str = "model",
    progress: bool | None = None,
) -> dict[str, Any] | None:
    """Train (or resume training) and write ``model.pt`` and the learning curves to ``out_dir``.

    Checkpoints go to ``out_dir/checkpoints/last.pt``; an existing one is resumed. Returns
    the model-file payload on rank 0 (None on other ranks).
    """
    out_dir = Path(out_dir)
    rank, world, local_rank = distributed_context()
    device = pick_device(local_rank)
    reader = TrainsetReader(trainset_store)
    model_config = _sized_for(model_config, reader)
    steps_per_epoch = _steps_per_epoch(reader, train_config, world)
    opt = _optimisation(model_config, train_config, steps_per_epoch, device, rank, world, local_rank)
    if train_config.teacher:
        opt.teacher = load_teacher(train_config.teacher, reader, device)

    checkpoint_path = out_dir / "checkpoints" / "last.pt"
    if not checkpoint_path.exists() and train_config.resume_from and Path(train_config.resume_from).exists():
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(train_config.resume_from, checkpoint_path)
    # what a resumed run must share with the checkpoint's run to end as if it had not stopped
    run = {
        "train_config": _run_identity(dataclasses.asdict(train_config)),
        "loss_weights": dataclasses.asdict(loss_weights),
        "trainset": {"generator_digest": reader.attrs["generator_digest"], "n_spectra": reader.n},
    }
    state = _resume(checkpoint_path, run, model_config, opt, model_name)
    if not state["history"] and train_config.warm_start:
        state = _warm_start(Path(train_config.warm_start), run, model_config, opt, steps_per_epoch)
    elif not state["history"] and train_config.initial_weights:
        _start_from_weights(Path(train_config.initial_weights), reader, model_config, opt)

    show = (sys.stderr.isatty() if progress is None else progress) and rank == 0
    while (
        state["epoch"] < min(train_config.max_epochs, train_config.stop_after_epochs or train_config.max_epochs)
        and state["bad_epochs"] < train_config.patience
        and not _over_budget(state["history"], train_config.max_hours)
    ):
        epoch = state["epoch"]
        started = time.perf_counter()
        train_terms = _train_epoch(opt, reader, train_config, loss_weights, epoch, steps_per_epoch, show)
        val_terms, _ = evaluate_split(
            opt.validated, reader, "validation", device, rank=rank, world=world, teacher=opt.teacher
        )
        val_loss = sum(getattr(loss_weights, k) * v for k, v in val_terms.items())
        train_loss = sum(getattr(loss_weights, k) * v for k, v in train_terms.items())
        if opt.average is not None:  # what the average gains over the last weights, for the record
            last_terms, _ = evaluate_split(
                opt.module, reader, "validation", device, rank=rank, world=world, teacher=opt.teacher
            )
            val_terms_last = {"val_loss_last_weights": sum(getattr(loss_weights, k) * v for k, v in last_terms.items())}
        else:
            val_terms_last = {}
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            **val_terms_last,
            **{f"train_{k}": v for k, v in train_terms.items()},
            **{f"val_{k}": v for k, v in val_terms.items()},
            "learning_rate": opt.optimiser.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
        }
        state["history"].append(record)
        if val_loss < state["best_val"] - 1e-6:
            state["best_val"], state["bad_epochs"] = val_loss, 0
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in opt.validated.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if rank == 0:
            log.info(
                "epoch %d: train %.4f  validation %.4f  (%.1f s)", epoch + 1, train_loss, val_loss, record["seconds"]
            )
            checkpoint = {
                **opt.state_dicts(),
                "rng": _rng_state(),
                "model_config": model_config.to_dict(),
                "train_settings": dataclasses.asdict(train_config),  # all of them, for export_checkpoint
            }
            # the best weights are kept once: while the last epoch is the best they are its
            # validated weights, already in the checkpoint (which stays below 5 MB to be committed)
            kept = {**state, "best_state": None} if state["bad_epochs"] == 0 else state
            save_atomically({**checkpoint, **run, **kept}, checkpoint_path)
        if world > 1:
            dist.barrier()

    if rank != 0:
        return None
    opt.module.load_state_dict(state["best_state"])
    payload = _model_payload(opt, reader, trainset_store, model_name, model_config, train_config, loss_weights, state)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_atomically(payload, out_dir / "model.pt")
    write_history(state["history"], out_dir)
    return payload


def checkpoint_best_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The best weights so far of a checkpoint (on the CPU): stored, or, when its last epoch was
    the best (not stored twice), the weights it validated then: the moving average where there
    is one, else the last weights. None before the first epoch."""
    if ckpt.get("best_state") is not None:
        best = ckpt["best_state"]
    elif not ckpt.get("history"):
        return None
    elif ckpt.get("weight_average") is not None:
        best = {k.removeprefix("module."): v for k, v in ckpt["weight_average"].items() if k.startswith("module.")}
    else:
        best = ckpt["model"]
    return {k: v.detach().cpu().clone() for k, v in best.items()}


def export_checkpoint(
    checkpoint_path: str | os.PathLike, trainset_store: str | os.PathLike, out_path: str | os.PathLike
) -> dict[str, Any]:
    """Write the model file of a training still under way (or stopped): the best weights of its
    checkpoint so far, calibrated on the validation split as ``train`` does at its end.

    The training itself is not touched and resumes from the same checkpoint. Returns the payload.
    """
    ckpt = read_checkpoint(checkpoint_path)
    ckpt["best_state"] = checkpoint_best_state(ckpt)
    if ckpt["best_state"] is None:
        raise ValueError(f"checkpoint {checkpoint_path} has no finished epoch to export")
    reader = TrainsetReader(trainset_store)
    if ckpt["trainset"]["generator_digest"] != reader.attrs["generator_digest"]:
        raise ValueError(f"checkpoint {checkpoint_path} was not trained on {trainset_store}")
    model_config = ModelConfig.from_dict(ckpt["model_config"])
    if "train_settings" not in ckpt:  # stop conditions and averaging were not saved before
        log.warning("%s does not record the run's stop conditions and weight averaging", checkpoint_path)
    train_config = TrainConfig.from_dict(ckpt.get("train_settings", ckpt["train_config"]))
    opt = _optimisation(model_config, train_config, 1, torch.device("cpu"), 0, 1, 0)
    opt.module.load_state_dict(ckpt["best_state"])
    name = Path(checkpoint_path).resolve().parent.parent.name
    payload = _model_payload(
        opt, reader, trainset_store, name, model_config, train_config, LossWeights(**ckpt["loss_weights"]), ckpt
    )
    save_atomically(payload, out_path)
    return payload


def ensemble_answers_on_split(
    predictor, reader: TrainsetReader, split: str, batch_size: int = 256
) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Every member's answer (:meth:`sfh_pipeline.predict.Predictor.answer`) of an
    :class:`~sfh_pipeline.predict.EnsemblePredictor` to the spectra of ``split``, read chunk by
    chunk with every band (as evaluation batches are), and their truths: ``true_sfh``,
    ``true_logzsol``, ``true_formation`` (T50, T90, log yr), ``true_snr`` and ``true_<key>`` of
    the four summaries."""
    answers: list[dict[str, list[np.ndarray]]] = [{} for _ in predictor.members]
    truths: dict[str, list[np.ndarray]] = {}
    for chunk in range(reader.n_chunks):
        arrays = reader.read_chunk(chunk, split)
        if not len(arrays["flux"]):
            continue
        present = np.ones(arrays["phot"].shape, dtype=bool)
        found = predictor.member_answers(
            arrays["flux"], arrays["error"], arrays["mask"], arrays["phot"], arrays["phot_error"], present, batch_size
        )
        for collected, answer in zip(answers, found):
            for key, value in answer.items():
                collected.setdefault(key, []).append(value)
        for key in ("sfh", "logzsol", "formation", "snr", *SUMMARY_KEYS):
            truths.setdefault(f"true_{key}", []).append(np.asarray(arrays[key], dtype=np.float64))
    if not truths:
        raise ValueError(f"{reader.store} has no {split} spectra (split code {SPLIT_CODES[split]})")
    joined = [{key: np.concatenate(values) for key, values in collected.items()} for collected in answers]
    return joined, {key: np.concatenate(values) for key, values in truths.items()}


def combine_ensemble(
    member_paths: list[str | os.PathLike],
    trainset_store: str | os.PathLike,
    out_path: str | os.PathLike,
    name: str | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Write the ensemble file of several model files trained on ``trainset_store``: one file
    (format :data:`~sfh_pipeline.model.ENSEMBLE_FORMAT`) holding ``name``, ``members`` (each
    member file's ``payload``, its ``sha256`` and the ``file`` it was read from),
    ``calibration`` (:func:`sfh_pipeline.ensemble.fit_calibration`, measured on the validation
    split of the training set) and ``trainset`` (its store and generator digest).

    ValueError if the members were trained on different training sets or on another than
    ``trainset_store``, or a file is given twice (the message names the file and what differs).
    Returns the payload.
    """
    from ..core.products import sha256_of
    from .ensemble import fit_calibration
    from .predict import EnsemblePredictor

    reader = TrainsetReader(trainset_store)
    digest = reader.attrs["generator_digest"]
    members = []
    for path in map(Path, member_paths):
        member = read_model_payload(path)
        if member.get("format") == ENSEMBLE_FORMAT:
            raise ValueError(f"{path} is an ensemble file; an ensemble's members are model files of single networks")
        theirs = (member.get("trainset") or {}).get("generator_digest", "")
        if theirs != digest:
            raise ValueError(
                f"{path} was trained on another training set than {trainset_store} (generator digest "
                f"{theirs[:12]}..., the store's {digest[:12]}...): the calibration needs the members' own validation "
                "split"
            )
        members.append({"payload": member, "sha256": sha256_of(path), "file": str(path)})
        twin = next((m["file"] for m in members[:-1] if m["sha256"] == members[-1]["sha256"]), None)
        if twin is not None:
            raise ValueError(f"{path} is the same file as {twin}: an ensemble's members must be different trainings")
    uncalibrated = {"name": name, "members": members, "calibration": None}
    predictor = EnsemblePredictor(member_paths[0], uncalibrated, device=device or "cpu", member_paths=member_paths)
    answers, truths = ensemble_answers_on_split(predictor, reader, "validation")
    payload = {
        "format": ENSEMBLE_FORMAT,
        "name": name or Path(out_path).resolve().parent.name,
        "members": members,
        "calibration": fit_calibration(answers, truths, predictor.bin_age_yr),
        "trainset": {"store": str(trainset_store), "generator_digest": digest},
    }
    save_atomically(payload, out_path)
    return payload


def _sized_for(model_config: ModelConfig, reader: TrainsetReader) -> ModelConfig:
    """``model_config`` with its input and output sizes (wavelength pixels, filters, age bins,
    log Z range) taken from the training set."""
    attrs = reader.attrs
    expected = {
        "n_wave": reader.wavelength_aa.size,
        "n_filters": len(attrs["filters"]),
        "n_bins": len(attrs["age_bin_edges_yr"]) - 1,
        "logz_range": tuple(attrs["logzsol_range"]),
    }
    mismatched = {k: (getattr(model_config, k), v) for k, v in expected.items() if getattr(model_config, k) != v}
    if mismatched:
        log.info("input and output sizes taken from the training set: %s", mismatched)
        model_config = dataclasses.replace(model_config, **expected)
    return model_config


def _steps_per_epoch(reader: TrainsetReader, train_config: TrainConfig, world: int) -> int:
    """Optimiser steps of one epoch: the same on every rank (the smallest rank's share)."""
    per_rank = min(reader.count("train", shard_chunks(reader.n_chunks, 0, 0, r, world, False)) for r in range(world))
    steps = max(1, per_rank // train_config.batch_size)
    if train_config.max_train_batches_per_epoch:
        steps = min(steps, train_config.max_train_batches_per_epoch)
    return steps


def _optimisation(
    model_config: ModelConfig,
    train_config: TrainConfig,
    steps_per_epoch: int,
    device: torch.device,
    rank: int,
    world: int,
    local_rank: int,
) -> _Optimisation:
    """A freshly seeded network on ``device`` with AdamW, warm-up + cosine schedule and AMP on CUDA."""
    torch.manual_seed(train_config.seed)
    np.random.seed(train_config.seed)
    random.seed(train_config.seed)
    module = SFHNet(model_config).to(device)
    net = module
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[local_rank] if device.type == "cuda" else None
        )
    optimiser = torch.optim.AdamW(
        module.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    warmup = max(1, int(train_config.warmup_epochs * steps_per_epoch))
    total = train_config.max_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, LearningRateSchedule(warmup, total))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    half_life = train_config.weight_average_half_life_epochs
    average = None if half_life is None else moving_average(module, half_life * steps_per_epoch)
    return _Optimisation(net, module, optimiser, scheduler, scaler, device, rank, world, average)


def load_teacher(path: str | os.PathLike, reader: TrainsetReader, device: torch.device) -> torch.nn.Module:
    """The teacher of a distillation (``model.training.teacher``), frozen, on ``device``: the
    network of a model file, or the :class:`~sfh_pipeline.model.NetworkMixture` of an ensemble
    file's members; ValueError unless every network reads the training set's wavelengths and
    bands and predicts its age bins (it may have been trained on another set)."""
    payload = read_model_payload(path, map_location=device)
    if payload.get("format") != ENSEMBLE_FORMAT:
        teacher, payload = load_model_file(path, map_location=device)
        _check_fits_trainset(payload, reader, f"teacher {path}")
        return teacher  # in eval mode, on device; every call of it is under torch.no_grad
    networks = []
    for i, member in enumerate(payload["members"]):
        where = f"teacher {path}, member {i}"
        _check_fits_trainset(member["payload"], reader, where)
        networks.append(network_of_payload(member["payload"], where).to(device))
    return NetworkMixture(networks).eval()


def _start_from_weights(path: Path, reader: TrainsetReader, model_config: ModelConfig, opt: _Optimisation) -> None:
    """Fine-tuning (``model.training.initial_weights``): the weights of another run's model file
    ``path`` into ``opt``'s network and its moving average; ValueError unless the file has this
    architecture and reads this training set's wavelengths, bands and age bins."""
    payload = read_model_payload(path, map_location=opt.device)
    _check_architecture(payload["model_config"], model_config, f"initial weights {path}")
    _check_fits_trainset(payload, reader, f"initial weights {path}")
    _restore_model(opt.module, payload["state_dict"], path)
    if opt.average is not None:  # the average starts from these weights, not from the random ones
        for averaged, current in zip(opt.average.module.state_dict().values(), opt.module.state_dict().values()):
            averaged.copy_(current)
    log.info("starting from the weights of %s", path)


def _check_fits_trainset(payload: dict[str, Any], reader: TrainsetReader, what: str) -> None:
    """ValueError unless the model file's ``payload`` reads the training set's wavelengths and
    bands and predicts its age bins (it may have been trained on another set)."""
    theirs, attrs = payload["trainset"], reader.attrs

    def same(a: Any, b: Any) -> bool:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=0)

    differ = [
        what
        for what, alike in (
            ("wavelengths", same(theirs["wavelength_aa"], reader.wavelength_aa)),
            ("filters", list(theirs["filters"]) == list(attrs["filters"])),
            ("age bins", same(theirs["age_bin_edges_yr"], attrs["age_bin_edges_yr"])),
            ("normalisation window", same(theirs["norm_window_aa"], attrs["config"]["norm_window_aa"])),
        )
        if not alike
    ]
    if differ:
        raise ValueError(f"{what} does not fit this training set ({', '.join(differ)} differ)")


def _check_architecture(saved: dict[str, Any], model_config: ModelConfig, what: str) -> None:
    """ValueError unless the saved model settings are those configured now (read through
    ModelConfig, so that settings added since take their defaults)."""
    if ModelConfig.from_dict(saved).to_dict() != model_config.to_dict():
        raise ValueError(
            f"{what} was written by another architecture than model settings now configured; "
            "delete it or restore the settings"
        )


def _resume(
    checkpoint_path: Path, run: dict[str, Any], model_config: ModelConfig, opt: _Optimisation, model_name: str
) -> dict[str, Any]:
    """The training state (epoch, best validation loss and weights, bad epochs, history): from
    the checkpoint when it is of the same run (its weights, optimiser, schedule, scaler and
    random state restored into ``opt``), else a fresh one."""
    state = {"epoch": 0, "best_val": math.inf, "bad_epochs": 0, "history": [], "best_state": None}
    if not checkpoint_path.exists():
        return state
    ckpt = read_checkpoint(checkpoint_path, map_location=opt.device)
    _check_architecture(ckpt.get("model_config", {}), model_config, f"checkpoint {checkpoint_path}")
    # read through the settings' classes, so that settings added since take their defaults
    ckpt["train_config"] = _run_identity(dataclasses.asdict(TrainConfig.from_dict(ckpt["train_config"])))
    ckpt["loss_weights"] = dataclasses.asdict(LossWeights(**ckpt["loss_weights"]))
    changed = [key for key in run if ckpt.get(key) != run[key]]
    if changed:  # e.g. a grown training set or new training settings: the old run is not resumed
        log.warning(
            "checkpoint %s is of another training run (%s differ): not resumed",
            checkpoint_path,
            ", ".join(changed),
        )
        return state
    _restore_model(opt.module, ckpt["model"], checkpoint_path)
    opt.optimiser.load_state_dict(ckpt["optimiser"])
    opt.scheduler.load_state_dict(ckpt["scheduler"])
    opt.scaler.load_state_dict(ckpt["scaler"])
    if opt.average is not None:
        if ckpt.get("weight_average") is not None:
            opt.average.load_state_dict(ckpt["weight_average"])
        else:  # a run begun without the average: it starts from the weights now, aged by the steps taken
            opt.average.update_parameters(opt.module)
            opt.average.n_averaged.fill_(opt.scheduler.last_epoch)
    _set_rng_state(ckpt["rng"])
    state = {k: ckpt[k] for k in state}
    state["best_state"] = checkpoint_best_state(ckpt)
    log.info("resuming %s from epoch %d (%s)", model_name, state["epoch"], checkpoint_path)
    return state


def _warm_start(
    model_path: Path, run: dict[str, Any], model_config: ModelConfig, opt: _Optimisation, steps_per_epoch: int
) -> dict[str, Any]:
    """The training state of the run that wrote the model file ``model_path``: its weights
    (into ``opt``'s network and moving average), epochs, history and best validation loss; the
    learning rate goes on from its last epoch with a fresh warm-up. The file must come from
    the same run (settings but max_epochs, loss weights, training set), else ValueError."""
    payload = read_model_payload(model_path, map_location=opt.device)
    _check_architecture(payload["model_config"], model_config, f"warm start {model_path}")
    theirs = _run_identity(dataclasses.asdict(TrainConfig.from_dict(payload["train_config"])))
    # max_epochs may differ: the cosine then goes on over the new length
    changed = [k for k, v in run["train_config"].items() if k != "max_epochs" and theirs[k] != v]
    if dataclasses.asdict(LossWeights(**payload["loss_weights"])) != run["loss_weights"]:
        changed.append("loss_weights")
    if payload["trainset"]["generator_digest"] != run["trainset"]["generator_digest"]:
        changed.append("training set")
    if changed:
        raise ValueError(f"warm start {model_path} is of another training run ({', '.join(changed)} differ)")
    _restore_model(opt.module, payload["state_dict"], model_path)
    epoch = int(payload["epochs_run"])
    restart = epoch * steps_per_epoch
    schedule = opt.scheduler.lr_lambdas[0]
    schedule.restart = restart
    opt.scheduler.last_epoch = restart
    for group, base in zip(opt.optimiser.param_groups, opt.scheduler.base_lrs, strict=True):
        group["lr"] = base * schedule(restart)
    if opt.average is not None:  # the file holds averaged weights: the average goes on from them at full half-life
        opt.average.update_parameters(opt.module)
        opt.average.n_averaged.fill_(restart)
    history = payload["history"]
    best = int(np.argmin([h["val_loss"] for h in history]))
    log.info("warm start from %s at epoch %d", model_path, epoch)
    return {
        "epoch": epoch,
        "best_val": payload["best_validation_loss"],
        "bad_epochs": len(history) - 1 - best,
        "history": history,
        "best_state": {k: v.detach().cpu().clone() for k, v in opt.validated.state_dict().items()},
    }


def _train_epoch(
    opt: _Optimisation,
    reader: TrainsetReader,
    train_config: TrainConfig,
    loss_weights: LossWeights,
    epoch: int,
    steps_per_epoch: int,
    show: bool,
) -> dict[str, float]:
    """One pass of optimiser steps over this rank's share of the training split; the mean of
    each loss term over all ranks' spectra."""
    opt.net.train()
    use_amp = opt.device.type == "cuda"
    names = LOSS_TERMS + (("distillation",) if opt.teacher is not None else ())
    sums = torch.zeros(len(names) + 1, dtype=torch.float64)
    batches = iterate_batches(
        reader,
        "train",
        train_config.batch_size,
        epoch,
        train_config.seed,
        rank=opt.rank,
        world=opt.world,
        train=True,
        config=train_config,
        max_batches=steps_per_epoch,
    )
    if show:
        from tqdm import tqdm

        batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{train_config.max_epochs}", leave=False)
    for batch, _ in batches:
        batch = {k: v.to(opt.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=opt.device.type, enabled=use_amp):
            out = opt.net(batch["spectrum"], batch["photometry"])
            if opt.teacher is not None:
                with torch.no_grad():
                    taught = opt.teacher(batch["spectrum"], batch["photometry"])
        terms = loss_terms(out, batch)
        if opt.teacher is not None:
            terms["distillation"] = distillation_loss(out, taught)
        loss = total_loss(terms, loss_weights)
        opt.optimiser.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.unscale_(opt.optimiser)
        torch.nn.utils.clip_grad_norm_(opt.module.parameters(), train_config.grad_clip)
        opt.scaler.step(opt.optimiser)
        opt.scaler.update()
        opt.scheduler.step()
        if opt.average is not None:
            opt.average.update_parameters(opt.module)
        n = batch["sfh"].shape[0]
        sums += torch.tensor([n, *[float(v.detach()) * n for v in terms.values()]], dtype=torch.float64)
    sums = _all_reduce_sum(sums, opt.world)
    return {name: float(sums[i + 1] / max(sums[0], 1)) for i, name in enumerate(names)}


def _model_payload(
    opt: _Optimisation,
    reader: TrainsetReader,
    trainset_store: str | os.PathLike,
    model_name: str,
    model_config: ModelConfig,
    train_config: TrainConfig,
    loss_weights: LossWeights,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The model file's contents: weights, settings, the calibrations measured on the validation
    split (error scales, OOD reference, quantile widening), the training set's metadata that
    prediction needs, and the training history."""
    attrs = reader.attrs
    _, val_predictions = evaluate_split(opt.module, reader, "validation", opt.device)
    return {
        "format": MODEL_FORMAT,
        "name": model_name,
        "model_config": model_config.to_dict(),
        "train_config": dataclasses.asdict(train_config),
        "loss_weights": dataclasses.asdict(loss_weights),
        "state_dict": {k: v.cpu() for k, v in opt.module.state_dict().items()},
        "sigma_scale": calibrate_sigmas(val_predictions),
        "ood_reference": ood_reference(val_predictions["pred_spectral_features"]),
        "quantile_calibration": calibrate_quantiles(val_predictions) if "pred_quantiles" in val_predictions else None,
        "velocity_template": trainset_velocity_template(reader),
        "trainset": {
            "store": str(trainset_store),
            "generator_digest": attrs["generator_digest"],
            "wavelength_aa": reader.wavelength_aa.tolist(),
            "filters": list(attrs["filters"]),
            "age_bin_edges_yr": attrs["age_bin_edges_yr"],
            "bin_age_yr": attrs["bin_age_yr"],
            "logzsol_range": attrs["logzsol_range"],
            "norm_window_aa": attrs["config"]["norm_window_aa"],
            "emission_lines_aa": attrs["emission_lines_aa"],
            "emission_mask_halfwidth_kms": attrs["config"]["emission_mask_halfwidth_kms"],
            "ssp": attrs["ssp"],
        },
        "history": state["history"],
        "best_validation_loss": state["best_val"],
        "world_size": opt.world,
        "device": str(opt.device),
        "epochs_run": state["epoch"],
    }


def _run_identity(train_config: dict[str, Any]) -> dict[str, Any]:
    """The training settings that decide the batches and weights of every epoch (stop conditions,
    the averaging of the weights, which does not feed back into the optimisation, and the warm
    start and the checkpoint to resume from, which only say where the run comes from, left out)."""
    ignored = (
        "patience",
        "max_hours",
        "stop_after_epochs",
        "weight_average_half_life_epochs",
        "warm_start",
        "resume_from",
    )
    return {k: v for k, v in train_config.items() if k not in ignored}


def _over_budget(history: list[dict[str, float]], max_hours: float | None) -> bool:
    """Whether the epochs run so far (their ``seconds``, over all resumptions) used up ``max_hours``."""
    return max_hours is not None and sum(h["seconds"] for h in history) >= max_hours * 3600


def write_history(history: list[dict[str, float]], out_dir: Path) -> None:
    """history.csv, history.json and learning_curve.png of the epochs run. A column that only
    later epochs have (``val_loss_last_weights`` of a run that began averaging on resumption)
    is empty in the earlier rows."""
    if not history:
        return
    fields = list(dict.fromkeys(key for record in history for key in record))
    with atomic_path(out_dir / "history.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)
    write_json_atomically(out_dir / "history.json", {"epochs": history})
    from ..synth.qa import plot_learning_curves

    plot_learning_curves(history, out_dir / "learning_curve.png")
