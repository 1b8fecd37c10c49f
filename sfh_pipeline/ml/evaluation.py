"""Evaluation of a trained model on the held-out test split of its training set.

:func:`evaluate_model` writes ``metrics.json`` (the contract of docs/contracts.md, "Model
evaluation") and three quick-look figures to the model's results directory:

* ``pred_vs_true.png``: predicted against true light-/mass-weighted ages and metallicities;
* ``sfh_bins.png``: recovery of the mass fraction in each SFH bin;
* ``age_metallicity.png``: true and predicted age-metallicity relations and cumulative SFHs
  of a few test galaxies spanning the S/N range.

All differences are predicted - true; ages are log10(age/yr) and metallicities
log10(Z/Z_sun), so their errors are in dex.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from ..core.atomic import write_json_atomically  # noqa: E402
from ..synth.qa import save_figure_atomically  # noqa: E402
from .model import (  # noqa: E402
    ENSEMBLE_FORMAT,
    SUMMARY_KEYS,
    network_of_payload,
    pick_device,
    read_model_payload,
)
from .training import (  # noqa: E402
    SPLIT_CODES,
    TrainsetReader,
    ensemble_answers_on_split,
    evaluate_split,
)

#: Normal-distribution factor turning a median absolute deviation into a sigma.
MAD_TO_SIGMA = 1.4826
LABELS = {
    "lw_age": r"$\langle\log\,$age/yr$\rangle_L$",
    "mw_age": r"$\langle\log\,$age/yr$\rangle_M$",
    "lw_logz": r"$\langle\log\,Z/Z_\odot\rangle_L$",
    "mw_logz": r"$\langle\log\,Z/Z_\odot\rangle_M$",
}


def summary_metrics(pred: np.ndarray, true: np.ndarray, sigma: np.ndarray | float | None = None) -> dict[str, float]:
    """Bias, robust scatter and RMS of ``pred - true`` (and the coverage of ``sigma``).

    Parameters
    ----------
    pred, true : array_like, shape (n,)
        Predicted and true values (dex: log ages or log metallicities). Pairs with a
        non-finite member are ignored.
    sigma : array_like or float, optional
        Predicted 1-sigma uncertainties (dex), per sample or one for all.

    Returns
    -------
    dict
        ``bias_dex`` (median of pred - true), ``scatter_dex`` (1.4826 x median absolute
        deviation of pred - true about its median), ``rms_dex``; with ``sigma`` also
        ``coverage_68`` (fraction with ``|pred - true| <= sigma``, 0.683 for calibrated
        Gaussian errors) and ``median_sigma_dex``. NaN when no pair is finite.
    """
    pred, true = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(true, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred and true differ in length ({pred.size} vs {true.size})")
    sig = None if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=np.float64).ravel(), pred.shape)
    ok = np.isfinite(pred) & np.isfinite(true) & (True if sig is None else np.isfinite(sig))
    delta = pred[ok] - true[ok]
    out: dict[str, float] = {"bias_dex": math.nan, "scatter_dex": math.nan, "rms_dex": math.nan}
    if sig is not None:
        out.update(coverage_68=math.nan, median_sigma_dex=math.nan)
    if delta.size == 0:
        return out
    median = float(np.median(delta))
    out.update(
        bias_dex=median,
        scatter_dex=float(MAD_TO_SIGMA * np.median(np.abs(delta - median))),
        rms_dex=float(np.sqrt(np.mean(delta**2))),
    )
    if sig is not None:
        out.update(coverage_68=float(np.mean(np.abs(delta) <= sig[ok])), median_sigma_dex=float(np.median(sig[ok])))
    return out


def _jsonable(value: Any) -> Any:
    """Builtin types for JSON; non-finite floats become null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _snr_ranges(snr: np.ndarray, edges: tuple[float, ...]) -> list[tuple[float, float]]:
    """``[lo, hi)`` ranges of ``edges``, plus open ranges below/above them if any sample falls there."""
    edges = sorted(float(e) for e in edges)
    ranges = list(zip(edges[:-1], edges[1:]))
    if edges and np.any(snr < edges[0]):
        ranges.insert(0, (0.0, edges[0]))
    if edges and np.any(snr >= edges[-1]):
        ranges.append((edges[-1], math.inf))
    return ranges


def compute_metrics(
    pred: dict[str, np.ndarray], bin_age_yr: np.ndarray, edges_yr: np.ndarray, snr_bins: tuple[float, ...]
) -> dict[str, Any]:
    """The metrics of :func:`evaluate_model` from calibrated predictions (see there)."""
    sigma = pred["pred_summary_sigma"]
    metrics: dict[str, Any] = {
        key: summary_metrics(pred["pred_summary"][:, i], pred[f"true_{key}"], sigma[:, i])
        for i, key in enumerate(SUMMARY_KEYS)
    }
    p, t = pred["pred_sfh"].astype(np.float64), pred["true_sfh"].astype(np.float64)
    zp, zt = pred["pred_logz"].astype(np.float64), pred["true_logzsol"].astype(np.float64)
    log_age = np.log10(bin_age_yr)
    metrics["mw_age_from_sfh"] = summary_metrics((p * log_age).sum(1), pred["true_mw_age"])
    metrics["mw_logz_from_sfh"] = summary_metrics((p * zp).sum(1), pred["true_mw_logz"])
    bins = []
    for k in range(p.shape[1]):
        d = p[:, k] - t[:, k]
        weight = t[:, k].sum()
        bins.append(
            {
                "age_min_yr": float(edges_yr[k]),
                "age_max_yr": float(edges_yr[k + 1]),
                "age_mid_yr": float(bin_age_yr[k]),
                "mean_true": float(t[:, k].mean()),
                "mean_pred": float(p[:, k].mean()),
                "bias": float(np.median(d)),
                "scatter": float(MAD_TO_SIGMA * np.median(np.abs(d - np.median(d)))),
                "mae": float(np.abs(d).mean()),
                "logz_mae_mass_weighted": (
                    float((np.abs(zp[:, k] - zt[:, k]) * t[:, k]).sum() / weight) if weight > 0 else None
                ),
            }
        )
    metrics["sfh_bins"] = bins
    metrics["sfh_cumulative_l1"] = float(np.abs(np.cumsum(p, 1) - np.cumsum(t, 1)).sum(1).mean())
    snr = pred["true_snr"].astype(np.float64)
    by_snr = []
    for lo, hi in _snr_ranges(snr, snr_bins):
        sel = (snr >= lo) & (snr < hi)
        entry: dict[str, Any] = {"snr_min": lo, "snr_max": hi if math.isfinite(hi) else None, "n": int(sel.sum())}
        for i, key in enumerate(SUMMARY_KEYS):
            m = summary_metrics(pred["pred_summary"][sel, i], pred[f"true_{key}"][sel], sigma[sel, i])
            entry[key] = {name: m[name] for name in ("bias_dex", "scatter_dex", "coverage_68")}
        by_snr.append(entry)
    metrics["by_snr"] = by_snr
    metrics["n_test"] = int(p.shape[0])
    return metrics


#: Expected share of truths below q2.5, in [q2.5, q16), [q16, q50), [q50, q84), [q84, q97.5), above.
RANK_EXPECTED = (0.025, 0.135, 0.34, 0.34, 0.135, 0.025)


def posterior_metrics(pred: dict[str, np.ndarray], calibration: dict[str, list[float]]) -> dict[str, Any]:
    """Calibration of the posterior heads on a split, per target, after the conformal widening.

    ``sfh`` and ``zh``: one entry per age bin; ``t50``, ``t90``: one each. Each has ``n``,
    ``coverage_68`` and ``coverage_95`` (share of truths inside the calibrated central
    intervals), ``rank_histogram`` (share of truths in the six intervals cut by the calibrated
    2.5, 16, 50, 84, 97.5 % quantiles: a coarse simulation-based-calibration histogram,
    expected :data:`RANK_EXPECTED`) and ``median_halfwidth`` (of the 68 % interval). T50/T90
    also have ``bias_dex`` and ``scatter_dex`` of the median. log Z counts only where the bin
    formed >= 2 % of the mass."""
    from .model import posterior_targets

    values, counts = posterior_targets(pred)
    q = pred["pred_quantiles"].astype(np.float64).copy()
    for level, (lo, hi) in (("68", (1, 3)), ("95", (0, 4))):
        widening = np.asarray(calibration[level])
        q[..., lo] -= widening
        q[..., hi] += widening
    n_bins = pred["true_sfh"].shape[1]

    def entry(t: int) -> dict[str, Any]:
        ok = counts[:, t]
        y, qt = values[ok, t], q[ok, t]
        inside = lambda lo, hi: float(np.mean((y >= qt[:, lo]) & (y <= qt[:, hi]))) if y.size else math.nan  # noqa: E731
        ranks = np.sum(y[:, None] > qt, axis=1)
        return {
            "n": int(ok.sum()),
            "coverage_68": inside(1, 3),
            "coverage_95": inside(0, 4),
            "rank_histogram": (np.bincount(ranks, minlength=6) / max(y.size, 1)).tolist(),
            "median_halfwidth": float(np.median(0.5 * (qt[:, 3] - qt[:, 1]))) if y.size else math.nan,
        }

    out: dict[str, Any] = {"sfh": [entry(t) for t in range(n_bins)], "zh": [entry(n_bins + t) for t in range(n_bins)]}
    for j, key in enumerate(("t50", "t90")):
        t = 2 * n_bins + j
        out[key] = {
            **entry(t),
            **{k: v for k, v in summary_metrics(q[:, t, 2], values[:, t]).items() if k in ("bias_dex", "scatter_dex")},
        }
    out["rank_expected"] = list(RANK_EXPECTED)
    return out


def evaluate_model(
    model_path: str | os.PathLike,
    trainset_store: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    snr_bins: tuple[float, ...] = (5, 10, 20, 30, 50, 150),
) -> dict[str, Any]:
    """Evaluate ``model.pt`` on the test split of ``trainset_store``; write metrics and figures.

    Parameters
    ----------
    model_path : path
        A model file written by :func:`sfh_pipeline.training.train`, or an ensemble file of
        :func:`sfh_pipeline.training.combine_ensemble` (then :func:`evaluate_ensemble`).
    trainset_store : path
        The finalized zarr training set (its ``split`` array marks the test samples, code 2).
    out_dir : path
        Directory receiving ``metrics.json``, ``pred_vs_true.png``, ``sfh_bins.png`` and
        ``age_metallicity.png`` (each written atomically).
    device : str or torch.device, optional
        Default: CUDA, then MPS, then CPU.
    snr_bins : tuple of float
        Edges of the S/N-per-pixel ranges ``[lo, hi)`` of ``by_snr``; samples outside the
        edges get open-ended ranges of their own, so the ``n`` always sum to ``n_test``.

    Returns
    -------
    dict
        The content of ``metrics.json``: per summary quantity (``lw_age``, ``mw_age``,
        ``lw_logz``, ``mw_logz``) ``bias_dex``, ``scatter_dex``, ``rms_dex``,
        ``coverage_68`` and ``median_sigma_dex`` (sigmas multiplied by the model's
        calibration factors ``sigma_scale``); ``mw_age_from_sfh`` and ``mw_logz_from_sfh``
        (mass-weighted age/metallicity implied by the predicted SFH and per-bin log Z, bin
        midpoint ages, vs truth: bias/scatter/rms in dex); ``sfh_bins`` (per bin: edges in
        yr, mean true/predicted mass fraction, ``bias``, ``scatter``, ``mae`` of predicted -
        true mass fraction, ``logz_mae_mass_weighted`` in dex); ``sfh_cumulative_l1`` (mean
        over galaxies of the summed |difference| of cumulative mass fractions); ``by_snr``;
        ``n_test``; ``model``; ``trainset``; ``test_loss_terms``; ``posteriors`` (models with
        posterior heads: :func:`posterior_metrics`). Non-finite numbers are
        written as null.

    Raises
    ------
    ValueError
        If the model file is missing or unreadable, or the test split is empty.
    """
    payload = read_model_payload(model_path)
    if payload["format"] == ENSEMBLE_FORMAT:
        return evaluate_ensemble(model_path, trainset_store, out_dir, device, snr_bins)
    net = network_of_payload(payload, model_path)
    device = torch.device(device) if device is not None else pick_device()
    net.to(device)
    reader = TrainsetReader(trainset_store)
    if not np.any(reader.split == SPLIT_CODES["test"]):
        raise ValueError(f"{trainset_store} has no test samples (split code {SPLIT_CODES['test']})")
    loss_terms, pred = evaluate_split(net, reader, "test", device)
    scale = payload.get("sigma_scale") or {}
    pred["pred_summary_sigma"] = pred["pred_summary_sigma"] * np.array([scale.get(k, 1.0) for k in SUMMARY_KEYS])
    info = payload.get("trainset") or {}
    edges = np.asarray(info.get("age_bin_edges_yr", reader.attrs["age_bin_edges_yr"]), dtype=np.float64)
    bin_age = np.asarray(info.get("bin_age_yr", reader.attrs["bin_age_yr"]), dtype=np.float64)

    metrics = compute_metrics(pred, bin_age, edges, snr_bins)
    if "pred_quantiles" in pred and payload.get("quantile_calibration"):
        metrics["posteriors"] = posterior_metrics(pred, payload["quantile_calibration"])
    metrics.update(
        model=payload.get("name", Path(model_path).parent.name),
        trainset=str(trainset_store),
        test_loss_terms=loss_terms,
    )
    metrics = _jsonable(metrics)
    out_dir = Path(out_dir)
    plot_pred_vs_true(pred, metrics, out_dir / "pred_vs_true.png")
    plot_sfh_bins(pred, edges, bin_age, out_dir / "sfh_bins.png")
    plot_age_metallicity(pred, edges, bin_age, out_dir / "age_metallicity.png")
    write_json_atomically(out_dir / "metrics.json", metrics)
    return metrics


def _as_evaluated(answer: dict[str, np.ndarray], truths: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An answer (:meth:`sfh_pipeline.predict.Predictor.answer`, errors before the OOD widening as
    :func:`evaluate_model` takes them) in the keys of :func:`compute_metrics` and
    :func:`posterior_metrics`: its posterior intervals as the five quantiles centre -/+ the 95 %
    and 68 % half-widths."""
    centre = answer["posterior_centre"]
    h68, h95 = answer["posterior_halfwidth_68"], answer["posterior_halfwidth_95"]
    return {
        **truths,
        "pred_summary": np.stack([answer[key] for key in SUMMARY_KEYS], axis=1),
        "pred_summary_sigma": np.stack([answer[f"{key}_err"] for key in SUMMARY_KEYS], axis=1),
        "pred_sfh": answer["sfh"],
        "pred_logz": answer["logzsol"],
        "pred_quantiles": np.stack([centre - h95, centre - h68, centre, centre + h68, centre + h95], axis=-1),
    }


def evaluate_ensemble(
    model_path: str | os.PathLike,
    trainset_store: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str | torch.device | None = None,
    snr_bins: tuple[float, ...] = (5, 10, 20, 30, 50, 150),
) -> dict[str, Any]:
    """:func:`evaluate_model` of an ensemble file (or a list of member files: uncalibrated), through
    its predictor: the same keys and figures of the ensemble's answers (errors before the OOD
    widening, as for a single model; no ``test_loss_terms``: an ensemble has no loss), and
    ``ensemble``: ``n_members``, ``calibrated``, per summary its ``source``, ``error_scale`` and
    ``median_epistemic_dex`` (the members' spread, dex), and ``members``: per member its
    ``name``, ``sha256`` and, for each summary, the figures of :func:`summary_metrics` of its
    own answers (its calibrated errors), from the same pass over the test split."""
    from .predict import load_predictor

    predictor = load_predictor(model_path, device=device)
    reader = TrainsetReader(trainset_store)
    if not np.any(reader.split == SPLIT_CODES["test"]):
        raise ValueError(f"{trainset_store} has no test samples (split code {SPLIT_CODES['test']})")
    answers, truths = ensemble_answers_on_split(predictor, reader, "test")
    answer = predictor.answer(answers)
    pred = _as_evaluated(answer, truths)
    edges = np.asarray(predictor.age_bin_edges_yr, dtype=np.float64)
    bin_age = np.asarray(predictor.bin_age_yr, dtype=np.float64)
    metrics = compute_metrics(pred, bin_age, edges, snr_bins)
    if np.isfinite(pred["pred_quantiles"]).all():
        no_widening = {level: [0.0] * pred["pred_quantiles"].shape[1] for level in ("68", "95")}
        metrics["posteriors"] = posterior_metrics(pred, no_widening)
    summaries = (predictor.calibration or {}).get("summaries", {})
    metrics["ensemble"] = {
        "n_members": len(predictor.members),
        "calibrated": predictor.calibrated,
        **{
            key: {
                "source": summaries.get(key, {}).get("source", "averaged_summaries"),
                "error_scale": summaries.get(key, {}).get("error_scale", 1.0),
                "median_epistemic_dex": float(np.median(answer[f"{key}_epistemic"])),
            }
            for key in SUMMARY_KEYS
        },
        "members": [
            {
                "name": member.name,
                "sha256": digest,
                **{key: summary_metrics(own[key], truths[f"true_{key}"], own[f"{key}_err"]) for key in SUMMARY_KEYS},
            }
            for member, digest, own in zip(predictor.members, predictor.member_sha256, answers)
        ],
    }
    metrics.update(model=predictor.name, trainset=str(trainset_store))
    metrics = _jsonable(metrics)
    out_dir = Path(out_dir)
    plot_pred_vs_true(pred, metrics, out_dir / "pred_vs_true.png")
    plot_sfh_bins(pred, edges, bin_age, out_dir / "sfh_bins.png")
    plot_age_metallicity(pred, edges, bin_age, out_dir / "age_metallicity.png")
    write_json_atomically(out_dir / "metrics.json", metrics)
    return metrics


# ----------------------------------------------------------------------------- figures


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def plot_pred_vs_true(pred: dict[str, np.ndarray], metrics: dict[str, Any], output: str | os.PathLike) -> Path:
    """Four panels of predicted vs true summary quantities (2-D histograms, 1:1 line, bias/scatter)."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    n = len(pred["pred_summary"])
    nbins = int(np.clip(np.sqrt(n), 10, 60))
    for i, (ax, key) in enumerate(zip(axes.flat, SUMMARY_KEYS)):
        x, y = pred[f"true_{key}"], pred["pred_summary"][:, i]
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        pad = 0.05 * max(hi - lo, 1e-3)
        lims = (lo - pad, hi + pad)
        _, _, _, image = ax.hist2d(x, y, bins=nbins, range=[lims, lims], cmin=1, norm=LogNorm(), cmap="viridis")
        fig.colorbar(image, ax=ax, label="N")
        ax.plot(lims, lims, "k--", lw=1)
        m = metrics[key]
        ax.text(
            0.04,
            0.96,
            f"bias {_fmt(m['bias_dex'])} dex\nscatter {_fmt(m['scatter_dex'])} dex\n"
            f"68% coverage {_fmt(m['coverage_68'])}",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            bbox={"fc": "white", "alpha": 0.8},
        )
        ax.set(xlim=lims, ylim=lims, xlabel=f"true {LABELS[key]}", ylabel=f"predicted {LABELS[key]}")
    fig.suptitle(f"test split: {n} spectra")
    fig.tight_layout()
    return save_figure_atomically(fig, output)


def plot_sfh_bins(
    pred: dict[str, np.ndarray], edges_yr: np.ndarray, bin_age_yr: np.ndarray, output: str | os.PathLike
) -> Path:
    """Mean predicted vs true mass fraction per bin, and percentile bands of the per-bin error."""
    p, t = pred["pred_sfh"], pred["true_sfh"]
    x = np.log10(bin_age_yr)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    ax.plot(x, t.mean(0), "o-", label="true (mean)")
    ax.plot(x, p.mean(0), "s--", label="predicted (mean)")
    ax.fill_between(x, *np.percentile(t, [16, 84], 0), alpha=0.15, label="true 16-84 %")
    ax.fill_between(x, *np.percentile(p, [16, 84], 0), alpha=0.15, label="predicted 16-84 %")
    ax.set(xlabel="log bin age [yr]", ylabel="mass fraction", title="mass fraction per bin")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=8)
    ax = axes[1]
    d = p - t
    q = np.percentile(d, [2.5, 16, 50, 84, 97.5], axis=0)
    ax.fill_between(x, q[0], q[4], color="C0", alpha=0.2, label="2.5-97.5 %")
    ax.fill_between(x, q[1], q[3], color="C0", alpha=0.4, label="16-84 %")
    ax.plot(x, q[2], "o-", color="C0", label="median")
    ax.axhline(0, color="k", lw=0.8)
    for edge in np.log10(edges_yr[edges_yr > 0]):
        ax.axvline(edge, color="0.85", lw=0.5, zorder=0)
    ax.set(xlabel="log bin age [yr]", ylabel="predicted - true mass fraction", title="per-bin error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure_atomically(fig, output)


def plot_age_metallicity(
    pred: dict[str, np.ndarray],
    edges_yr: np.ndarray,
    bin_age_yr: np.ndarray,
    output: str | os.PathLike,
    n_examples: int = 6,
) -> Path:
    """Age-metallicity relations and cumulative SFHs (true vs predicted) of test galaxies spanning S/N."""
    snr = pred["true_snr"]
    order = np.argsort(snr)
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(n_examples, len(order))).round().astype(int))]
    ncol = len(picks)
    fig, axes = plt.subplots(2, ncol, figsize=(3.4 * ncol, 6.5), squeeze=False, sharex=True)
    x = np.log10(bin_age_yr)
    # lookback-time edges for the cumulative SFH; edge 0 drawn at half the first bin's midpoint
    xe = np.log10(np.where(edges_yr > 0, edges_yr, 0.5 * bin_age_yr[0]))
    for col, j in enumerate(picks):
        ax = axes[0, col]
        for key, z, label, colour in (
            ("true_sfh", pred["true_logzsol"][j], "true", "k"),
            ("pred_sfh", pred["pred_logz"][j], "predicted", "C3"),
        ):
            mass = pred[key][j]
            ax.plot(x, z, "-", color=colour, lw=0.7, alpha=0.5)
            ax.scatter(x, z, s=6 + 300 * mass, color=colour, alpha=0.6, label=label, edgecolor="none")
        ax.set(title=f"S/N {snr[j]:.0f}", ylabel="log Z/Z$_⊙$" if col == 0 else None)
        if col == 0:
            ax.legend(fontsize=7, loc="lower left")
        ax = axes[1, col]
        for key, label, colour in (("true_sfh", "true", "k"), ("pred_sfh", "predicted", "C3")):
            # fraction of the mass formed before each lookback time (summed from the oldest bin)
            formed = np.append(np.cumsum(pred[key][j][::-1])[::-1], 0.0)
            ax.plot(xe, formed, "-", color=colour, label=label)
        ax.set(
            xlabel="log lookback time [yr]",
            ylabel="mass fraction formed earlier" if col == 0 else None,
            ylim=(-0.02, 1.02),
        )
        if col == 0:
            ax.legend(fontsize=7)
    fig.suptitle("age-metallicity relations (point size ∝ mass fraction) and cumulative SFHs of test galaxies")
    fig.tight_layout()
    return save_figure_atomically(fig, output)
