"""The network: a 1-D residual CNN with self-attention for the spectrum, an MLP for the HST
fluxes, a shared latent space, and heads for the SFH, the metallicity history and the
light-/mass-weighted ages and metallicities with their uncertainties.

In the spirit of Galceran et al. (2026): convolutions + attention + a shared latent space
predicting 16 SFH bins and 16 metallicities jointly. Choices of ours: GroupNorm (no
dependence on batch size, identical in training and inference), a learned attention pooling
over the feature sequence, and heteroscedastic heads for the four summary quantities whose
widths are calibrated on the validation split after training.

Inputs (see :func:`encode_spectrum`, :func:`encode_photometry`):

* spectrum: (B, 3, n_wave) = normalised flux, log10 error + 1.5, valid-pixel flag; masked
  pixels carry zeros in the first two channels;
* photometry: (B, 3 * n_filters) = per band log10(flux / norm), relative error, present flag
  (zeros for an absent band).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.products import SUMMARY_KEYS

#: ``format`` of the model files (``model.pt``) the train stage writes.
MODEL_FORMAT = "sfh-pipeline-model/1"
#: ``format`` of an ensemble file: several model files of one training set in one file, with the
#: calibration of their combination (:mod:`sfh_pipeline.ensemble`).
ENSEMBLE_FORMAT = "sfh-pipeline-ensemble/1"
LOSS_TERMS = ("sfh_cross_entropy", "sfh_cumulative_l1", "logz_mass_weighted", "summary_nll", "posterior_pinball")
#: Quantiles predicted for every SFH bin, every metallicity bin and T50, T90 (posterior heads).
QUANTILES = (0.025, 0.16, 0.5, 0.84, 0.975)
#: Cumulative mass fractions whose lookback times (log yr) the posterior heads predict.
FORMATION_FRACTIONS = (0.5, 0.9)
#: Offset of the formation-time quantiles, log yr, so that the heads start near zero.
FORMATION_OFFSET = 9.0
#: Offsets subtracted from the summary targets so that the heads start near zero.
SUMMARY_OFFSETS = {"lw_age": 9.0, "mw_age": 9.5, "lw_logz": -0.5, "mw_logz": -0.5}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture; stored in every checkpoint so that a mismatch is caught on loading."""

    n_wave: int = 1761
    n_filters: int = 8
    n_bins: int = 16
    logz_range: tuple[float, float] = (-2.3, 0.7)
    stem_channels: int = 16
    stem_stride: int = 2
    #: Stem kernel in pixels; None means ``kernel_size``. A kernel shorter than the stride skips pixels.
    stem_kernel: int | None = None
    channels: tuple[int, ...] = (24, 32, 48, 64)
    blocks_per_stage: int = 1
    kernel_size: int = 7
    attention_dim: int = 64
    attention_heads: int = 4
    attention_layers: int = 1
    photometry_dim: int = 64
    latent_dim: int = 128
    dropout: float = 0.1
    #: Quantile heads for every SFH bin, every log Z bin and T50/T90. They read the latent
    #: space detached, so they never change the point estimates. Model files written before
    #: them load with False.
    posterior_heads: bool = True
    #: How the spectrum is read, a key of :data:`FRONT_ENDS`: "conv" (the stem, residual stages,
    #: attention and attention pooling above) or "linear": one learned projection of the whole
    #: encoded spectrum to ``linear_width`` followed by two dense layers (GEMM-shaped, for
    #: inference at the compute limit of a CPU; the conv settings are then unused).
    front_end: str = "conv"
    linear_width: int = 128
    #: None: the front end reads the normalised flux as it is. An integer: each spectrum is
    #: first divided by its least-squares Legendre polynomial of this degree (valid pixels
    #: only), as pPXF's multiplicative polynomial does, so the network sees only features
    #: narrower than about the window over the degree (≈ 250 Å for degree 8 on 4800–7000 Å)
    #: and nothing of the continuum shape that flux calibration and dust set.
    continuum_divide_degree: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        values = dict(values)
        for key in ("channels", "logz_range"):
            if key in values:
                values[key] = tuple(values[key])
        return settings_from_dict(cls, values, "model setting")


def settings_from_dict(cls, values: dict[str, Any], what: str):
    """``cls(**values)`` for a settings dataclass; unknown keys are an error that lists the known ones."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {what}(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**values)


def encode_spectrum(flux: np.ndarray, error: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Network input of normalised spectra: (B, 3, n_wave) float32.

    ``mask`` non-zero marks pixels to ignore (emission lines, gaps); NaN flux or non-positive
    error are ignored too.
    """
    flux = np.asarray(flux, dtype=np.float32)
    error = np.ascontiguousarray(error, dtype=np.float32)
    if not error.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from zarr)
        error = error.copy()
    out = np.empty(flux.shape[:-1] + (3, flux.shape[-1]), dtype=np.float32)
    values, log_error, flag = out[..., 0, :], out[..., 1, :], out[..., 2, :]
    # torch's vectorised log10 is ~5x numpy's on float32; this encoding is a third of the
    # cost of CPU inference with the small networks.
    torch.log10(torch.from_numpy(error), out=torch.from_numpy(log_error))
    valid = np.isfinite(flux)
    valid &= np.isfinite(log_error)  # error <= 0, NaN or inf
    valid &= np.asarray(mask) == 0
    np.copyto(values, flux)
    log_error += 1.5
    np.copyto(out[..., :2, :], 0.0, where=~valid[..., None, :])
    np.copyto(flag, valid)
    return out


def encode_photometry(phot: np.ndarray, phot_error: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Network input of normalised HST fluxes: (B, 3 * n_filters) float32; absent bands are zeros."""
    phot = np.asarray(phot, dtype=np.float32)
    err = np.asarray(phot_error, dtype=np.float32)
    present = np.asarray(present, dtype=bool) & np.isfinite(phot) & np.isfinite(err)
    positive = np.where(present, np.maximum(phot, 1e-4), 1.0)
    rel = np.where(present, np.clip(err / positive, 0.0, 1.0), 0.0)
    out = np.stack([np.where(present, np.log10(positive), 0.0), rel, present.astype(np.float32)], axis=-1)
    return out.reshape(*phot.shape[:-1], -1).astype(np.float32)


class ResidualBlock(nn.Module):
    """Conv-norm-GELU-conv-norm with a (strided 1x1) skip connection."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad)
        self.norm1 = nn.GroupNorm(math.gcd(8, c_out), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad)
        self.norm2 = nn.GroupNorm(math.gcd(8, c_out), c_out)
        self.skip = nn.Identity() if (c_in == c_out and stride == 1) else nn.Conv1d(c_in, c_out, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.gelu(y + self.skip(x))


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: table[:, 1::2].shape[1]])
    return table


# ----------------------------------------------------------------------------- front ends


class FrontEnd:
    """How a network reads its encoded spectrum; subclasses are registered in :data:`FRONT_ENDS`
    under the name a model file records (``model_config["front_end"]``).

    ``build`` adds the layers to the network as its own attributes, so that their weights are
    named in the state_dict as they always were (``stem.0.weight``, ``spectral.1.bias``, ...):
    committed model files load unchanged. ``read`` maps the encoded spectra (B, 3, n_wave) to
    the spectral embedding (B, attention_dim).
    """

    @staticmethod
    def build(net: nn.Module, config: ModelConfig) -> None:
        raise NotImplementedError

    @staticmethod
    def read(net: nn.Module, spectrum: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


#: The front ends by the name ``ModelConfig.front_end`` gives; add one with :func:`register_front_end`.
FRONT_ENDS: dict[str, type[FrontEnd]] = {}


def register_front_end(name: str):
    """Class decorator: register a :class:`FrontEnd` subclass as ``front_end: <name>``."""

    def register(cls: type[FrontEnd]) -> type[FrontEnd]:
        if name in FRONT_ENDS:
            raise ValueError(f"front end {name!r} is registered already ({FRONT_ENDS[name].__name__})")
        FRONT_ENDS[name] = cls
        return cls

    return register


def front_end_of(name: str) -> type[FrontEnd]:
    """The registered front end ``name``; ValueError listing the known ones otherwise."""
    try:
        return FRONT_ENDS[name]
    except KeyError:
        known = ", ".join(repr(k) for k in FRONT_ENDS)
        raise ValueError(f"model setting front_end must be one of {known}, got {name!r}") from None


@register_front_end("conv")
class ConvFrontEnd(FrontEnd):
    """Stem, strided residual stages, self-attention over the feature sequence, attention pooling."""

    @staticmethod
    def build(net: nn.Module, config: ModelConfig) -> None:
        c = config.channels
        k = config.kernel_size
        k_stem = config.stem_kernel or k
        net.stem = nn.Sequential(
            nn.Conv1d(3, config.stem_channels, k_stem, stride=config.stem_stride, padding=k_stem // 2), nn.GELU()
        )
        stages, c_in = [], config.stem_channels
        for c_out in c:
            stages.append(ResidualBlock(c_in, c_out, k, 2))
            stages += [ResidualBlock(c_out, c_out, k, 1) for _ in range(config.blocks_per_stage - 1)]
            c_in = c_out
        net.stages = nn.Sequential(*stages)
        length = (config.n_wave + 2 * (k_stem // 2) - k_stem) // config.stem_stride + 1
        for _ in c:
            length = (length + 2 * (k // 2) - k) // 2 + 1
        d = config.attention_dim
        net.project = nn.Linear(c[-1], d)
        net.register_buffer("positions", sinusoidal_positions(length, d), persistent=False)
        layer = nn.TransformerEncoderLayer(
            d, config.attention_heads, 2 * d, config.dropout, batch_first=True, activation="gelu", norm_first=True
        )
        net.encoder = (
            nn.TransformerEncoder(layer, config.attention_layers, enable_nested_tensor=False)
            if config.attention_layers > 0
            else nn.Identity()
        )
        net.pool_query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        net.pool = nn.MultiheadAttention(d, config.attention_heads, batch_first=True)

    @staticmethod
    def read(net: nn.Module, spectrum: torch.Tensor) -> torch.Tensor:
        x = net.stages(net.stem(spectrum))  # (B, C, L)
        x = net.project(x.transpose(1, 2)) + net.positions  # (B, L, d)
        x = net.encoder(x)
        pooled, _ = net.pool(net.pool_query.expand(x.shape[0], -1, -1), x, x)
        return pooled[:, 0]


@register_front_end("linear")
class LinearFrontEnd(FrontEnd):
    """One dense projection of the whole encoded spectrum to ``linear_width``, then two dense layers."""

    @staticmethod
    def build(net: nn.Module, config: ModelConfig) -> None:
        w, d = config.linear_width, config.attention_dim
        net.spectral = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * config.n_wave, w), nn.GELU(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, d)
        )

    @staticmethod
    def read(net: nn.Module, spectrum: torch.Tensor) -> torch.Tensor:
        return net.spectral(spectrum)


class SFHNet(nn.Module):
    """Spectrum + photometry -> SFH (mass fractions), log Z per bin, summary means and sigmas."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self._front_end = front_end_of(config.front_end)
        # built first: a seed's random initial weights depend on the order the layers are made in
        self._front_end.build(self, config)
        d = config.attention_dim
        if config.continuum_divide_degree is not None:
            x = torch.linspace(-1.0, 1.0, config.n_wave, dtype=torch.float64)
            basis = torch.stack(
                [torch.special.legendre_polynomial_p(x, k) for k in range(config.continuum_divide_degree + 1)], 1
            )
            self.register_buffer("continuum_basis", basis.float(), persistent=False)
            # products of every pair of polynomials: the normal matrices of a batch in one GEMM
            pairs = (basis[:, :, None] * basis[:, None, :]).reshape(config.n_wave, -1)
            self.register_buffer("continuum_basis_pairs", pairs.float(), persistent=False)
        p = config.photometry_dim
        self.photometry = nn.Sequential(nn.Linear(3 * config.n_filters, p), nn.GELU(), nn.Linear(p, p), nn.GELU())
        self.fuse = nn.Sequential(
            nn.Linear(d + p, 2 * config.latent_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(2 * config.latent_dim, config.latent_dim),
            nn.GELU(),
        )
        self.sfh_head = nn.Linear(config.latent_dim, config.n_bins)
        self.logz_head = nn.Linear(config.latent_dim, config.n_bins)
        self.summary_head = nn.Linear(config.latent_dim, 2 * len(SUMMARY_KEYS))
        self.register_buffer(
            "summary_offsets", torch.tensor([SUMMARY_OFFSETS[k] for k in SUMMARY_KEYS]), persistent=False
        )
        if config.posterior_heads:
            self.n_posterior_targets = 2 * config.n_bins + len(FORMATION_FRACTIONS)
            self.quantile_head = nn.Linear(config.latent_dim, self.n_posterior_targets * len(QUANTILES))
            offsets = torch.zeros(self.n_posterior_targets)
            offsets[2 * config.n_bins :] = FORMATION_OFFSET
            self.register_buffer("posterior_offsets", offsets, persistent=False)

    def divide_continuum(self, spectrum: torch.Tensor) -> torch.Tensor:
        """Encoded spectra (B, 3, n_wave) -> the same with the flux divided by its continuum
        (minus 1: zero where there is no line) and the log error lowered by log10 of it; masked
        pixels stay zero. The continuum is the unweighted least-squares Legendre polynomial of
        degree ``continuum_divide_degree`` over the valid pixels, floored at 1e-3 (the flux
        unit is the normalisation window's mean)."""
        flux, log_error, valid = spectrum.unbind(1)
        basis = self.continuum_basis
        n_terms = basis.shape[1]
        normal = (valid @ self.continuum_basis_pairs).view(-1, n_terms, n_terms)
        normal = normal + 1e-6 * torch.eye(n_terms, device=normal.device, dtype=normal.dtype)
        coefficients = torch.linalg.solve(normal, (flux * valid) @ basis)
        continuum = (coefficients @ basis.T).clamp_min(1e-3)
        lines = (flux / continuum - 1.0) * valid
        log_error = (log_error - torch.log10(continuum)) * valid
        return torch.stack([lines, log_error, valid], 1)

    def _read_spectrum(self, spectrum: torch.Tensor) -> torch.Tensor:
        """(B, 3, n_wave) encoded spectra -> (B, attention_dim) spectral embedding."""
        if self.config.continuum_divide_degree is not None:
            spectrum = self.divide_continuum(spectrum)
        return self._front_end.read(self, spectrum)

    def forward(self, spectrum: torch.Tensor, photometry: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self._read_spectrum(spectrum)
        latent = self.fuse(torch.cat([embedding, self.photometry(photometry)], dim=1))
        lo, hi = self.config.logz_range
        summary = self.summary_head(latent)
        n = len(SUMMARY_KEYS)
        out = {
            "sfh_logits": self.sfh_head(latent),
            "logz": lo + (hi - lo) * torch.sigmoid(self.logz_head(latent)),
            "summary": summary[:, :n] + self.summary_offsets,
            "summary_log_sigma": summary[:, n:].clamp(-7.0, 3.0),
            # the spectrum's embedding before the HST fluxes join: what the OOD score measures
            "spectral_features": embedding,
        }
        if self.config.posterior_heads:
            raw = self.quantile_head(latent.detach()).view(-1, self.n_posterior_targets, len(QUANTILES))
            # increasing by construction: the lowest quantile plus positive steps
            steps = torch.cat([torch.zeros_like(raw[..., :1]), F.softplus(raw[..., 1:])], dim=-1)
            out["quantiles"] = raw[..., :1] + torch.cumsum(steps, dim=-1) + self.posterior_offsets[:, None]
        return out


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (config: model.loss)."""

    sfh_cross_entropy: float = 1.0
    sfh_cumulative_l1: float = 1.0
    logz_mass_weighted: float = 1.0
    summary_nll: float = 0.5
    posterior_pinball: float = 1.0
    # weight of the teacher's predictions (model.training.teacher); unused without a teacher
    distillation: float = 1.0


def loss_terms(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-term losses (means over the batch).

    * SFH: cross-entropy of the predicted mass fractions against the true ones (= KL up to
      a constant) plus the L1 distance of the cumulative mass fractions (an earth-mover-like
      term that rewards putting mass in the neighbouring bin rather than far away);
    * metallicity: squared error per bin weighted by the bin's true mass fraction
      (metallicity is undefined where no mass formed);
    * summaries: Gaussian negative log-likelihood with predicted sigmas;
    * posterior heads (if any): pinball loss of the :data:`QUANTILES` of every SFH bin's mass
      fraction, every bin's log Z (weighted by the bin's true mass fraction, as above) and
      T50/T90 (``targets["formation"]``, log yr).
    """
    log_p = F.log_softmax(outputs["sfh_logits"].float(), dim=1)
    truth = targets["sfh"]
    ce = -(truth * log_p).sum(1).mean()
    cum = (torch.cumsum(log_p.exp(), 1) - torch.cumsum(truth, 1)).abs().sum(1).mean()
    logz = ((outputs["logz"].float() - targets["logzsol"]) ** 2 * truth).sum(1).mean()
    mu, log_sigma = outputs["summary"].float(), outputs["summary_log_sigma"].float()
    z = (targets["summary"] - mu) * torch.exp(-log_sigma)
    nll = (0.5 * z**2 + log_sigma).mean()
    terms = {
        "sfh_cross_entropy": ce,
        "sfh_cumulative_l1": cum,
        "logz_mass_weighted": logz,
        "summary_nll": nll,
        "posterior_pinball": torch.zeros((), device=ce.device),
    }
    if "quantiles" in outputs:
        values = torch.cat([truth, targets["logzsol"], targets["formation"]], dim=1)
        n_bins = truth.shape[1]
        weights = torch.ones_like(values)
        weights[:, n_bins : 2 * n_bins] = truth * n_bins  # log Z counts where mass formed
        terms["posterior_pinball"] = (pinball(outputs["quantiles"].float(), values) * weights[..., None]).mean()
    return terms


def distillation_loss(outputs: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> torch.Tensor:
    """How far a network's predictions are from a teacher network's on the same spectra (mean
    over the batch; knowledge distillation): the KL divergence of the SFH mass fractions from
    the teacher's, the squared difference of log Z per bin weighted by the teacher's mass
    fraction of that bin, and half the squared difference of the four summary means in units
    of the teacher's sigma. The summary sigmas and the posterior heads learn from the truth only,
    so that their calibration is the student's own."""
    log_p = F.log_softmax(outputs["sfh_logits"].float(), dim=1)
    log_q = F.log_softmax(teacher["sfh_logits"].float(), dim=1)
    q = log_q.exp()
    kl = (q * (log_q - log_p)).sum(1).mean()
    logz = ((outputs["logz"].float() - teacher["logz"].float()) ** 2 * q).sum(1).mean()
    z = (outputs["summary"].float() - teacher["summary"].float()) * torch.exp(-teacher["summary_log_sigma"].float())
    return kl + logz + 0.5 * (z**2).mean()


def pinball(quantiles: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Pinball (quantile) loss of predicted :data:`QUANTILES` (..., n_quantiles) at ``truth`` (...)."""
    levels = torch.tensor(QUANTILES, dtype=quantiles.dtype, device=quantiles.device)
    residual = truth[..., None] - quantiles
    return torch.maximum(levels * residual, (levels - 1) * residual)


def posterior_targets(predictions: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The truths the posterior heads predict, (n, 2 n_bins + 2): SFH mass fractions, log Z per
    bin, T50/T90 (log yr); and where each counts (log Z only where the bin formed >= 2 % of the mass)."""
    sfh = predictions["true_sfh"]
    values = np.concatenate([sfh, predictions["true_logzsol"], predictions["true_formation"]], axis=1)
    counts = np.ones(values.shape, dtype=bool)
    counts[:, sfh.shape[1] : 2 * sfh.shape[1]] = sfh >= 0.02
    return values, counts


def total_loss(terms: dict[str, torch.Tensor], weights: LossWeights) -> torch.Tensor:
    return sum(getattr(weights, name) * value for name, value in terms.items())


def without_posterior_heads(payload: dict) -> dict:
    """A model-file payload as written before the posterior heads: the same network and point
    estimates, no per-bin quantiles (for comparisons of speed and of old files)."""
    return {
        **{k: v for k, v in payload.items() if k != "quantile_calibration"},
        "model_config": {k: v for k, v in payload["model_config"].items() if k != "posterior_heads"},
        "state_dict": {k: v for k, v in payload["state_dict"].items() if not k.startswith("quantile_head")},
    }


# ----------------------------------------------------------------------------- model files, devices


def pick_device(local_rank: int = 0) -> torch.device:
    """CUDA (this rank's GPU) if present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class NetworkMixture(nn.Module):
    """The equal mixture of several networks of one training set (an ensemble's members),
    answering as one network in the outputs :func:`distillation_loss` reads, by the rules of
    :func:`sfh_pipeline.ensemble.combined_answer` with averaged summaries: the SFH is the
    members' mean mass fractions (``sfh_logits`` their log), the log Z of a bin the members'
    mean weighted by the mass each puts in it, the summaries the members' mean, and
    ``summary_log_sigma`` the log of the mixture's standard deviation (members' variances and
    their spread, uncalibrated). A teacher for distilling an ensemble into one network."""

    def __init__(self, networks: list[SFHNet]) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)

    def forward(self, spectrum: torch.Tensor, photometry: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = [net(spectrum, photometry) for net in self.networks]
        mass = torch.stack([F.softmax(o["sfh_logits"].float(), dim=1) for o in outs])  # (members, B, bins)
        logz = torch.stack([o["logz"].float() for o in outs])
        means = torch.stack([o["summary"].float() for o in outs])
        variances = torch.stack([torch.exp(2 * o["summary_log_sigma"].float()) for o in outs])
        return {
            "sfh_logits": torch.log(mass.mean(0).clamp_min(1e-30)),
            "logz": (mass * logz).sum(0) / mass.sum(0).clamp_min(1e-30),
            "summary": means.mean(0),
            "summary_log_sigma": 0.5 * torch.log(variances.mean(0) + means.var(0, unbiased=False)),
        }


def load_model_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[SFHNet, dict[str, Any]]:
    """A trained model and its metadata from ``model.pt``; mismatches are clear errors."""
    payload = read_model_payload(path, map_location)
    if payload.get("format") == ENSEMBLE_FORMAT:
        raise ValueError(
            f"{path} is an ensemble of {len(payload.get('members', []))} model files, not one network: "
            "load it with sfh_pipeline.load_predictor"
        )
    return network_of_payload(payload, path), payload


#: numpy arrays (a training checkpoint's random state): made from bytes, they run no code.
NUMPY_ARRAY_GLOBALS = (np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType)


def load_restricted(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", what: str = "model file", arrays: bool = False
) -> Any:
    """``torch.load`` of tensors and plain data (dicts, lists, numbers, strings) only, and with
    ``arrays`` numpy arrays too: a file holding any other Python object is refused (ValueError
    naming the file) before that object is made, since unpickling it could run code. ``what``
    names the kind of file in the messages."""
    try:
        with torch.serialization.safe_globals(list(NUMPY_ARRAY_GLOBALS) if arrays else []):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file
        # torch's message advises loading the file unrestricted; only its reason is passed on
        made = re.search(r"GLOBAL ([\w.]+)", str(err)) or re.search(r"got <class '([\w.]+)'>", str(err))
        if made:  # a class or function the file would have made or called
            raise ValueError(
                f"{path} is refused: besides tensors and plain data it holds a Python object ({made.group(1)}) "
                f"whose unpickling could run code; an sfh-pipeline {what} holds none"
            ) from err
        reason = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
        why = reason.group(1) if reason else err
        raise ValueError(f"{path} is not a readable sfh-pipeline {what} ({why})") from err


def read_model_payload(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The contents of a model file or of an ensemble file (``format`` :data:`MODEL_FORMAT` or
    :data:`ENSEMBLE_FORMAT`); ValueError naming the file if it is missing or neither.

    Only tensors and plain data (dicts, lists, numbers, strings) are read: a file holding any
    other Python object is refused before that object is made, since unpickling it could run
    code (a model file from elsewhere is not trusted). Model files hold nothing else.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model file {path} does not exist: run the train stage first")
    payload = load_restricted(path, map_location, "model file")
    if not isinstance(payload, dict) or payload.get("format") not in (MODEL_FORMAT, ENSEMBLE_FORMAT):
        raise ValueError(f"{path} is not an sfh-pipeline model file (format {MODEL_FORMAT} expected)")
    return payload


def network_of_payload(payload: dict[str, Any], where: str | os.PathLike) -> SFHNet:
    """The network (eval mode, on the CPU) of a model file's contents; ``where`` names the file
    (or ensemble member) in errors."""
    # files written before the posterior heads existed have none
    net = SFHNet(ModelConfig.from_dict({"posterior_heads": False, **payload["model_config"]}))
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"{where}: the weights do not fit the architecture recorded in the file "
            f"({str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err})"
        ) from err
    net.eval()
    return net
