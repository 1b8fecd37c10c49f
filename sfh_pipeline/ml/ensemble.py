"""Deep ensembles: several networks trained alike on one training set, answering together.

Members differ only in their seed (initialisation, order of the data, noise draws). Their
disagreement on a spectrum is an uncertainty that no single network states: the *epistemic*
part, large where the training set says little. This module holds the rules that make one
answer of the members' answers (:meth:`sfh_pipeline.predict.Predictor.answer`) and the fit of
those rules' calibration on the validation split; the ensemble file that carries them is
written by :func:`sfh_pipeline.training.combine_ensemble` and read by
:func:`sfh_pipeline.predict.load_predictor`.

**The answer** (:func:`combined_answer`):

* the SFH is the members' mean mass fractions; the log Z of a bin the members' mean weighted by
  the mass each puts in it (the metallicity of the mixture's stars of that bin);
* each of the four summaries is either the members' summaries averaged
  (``averaged_summaries``) or recomputed from the averaged histories (``averaged_histories``:
  mass weights for the mass-weighted ones, exactly as the training set defines them; light
  weights from a table of light per unit mass for the light-weighted ones, see
  :func:`fit_light_per_mass`), whichever the calibration chose;
* ``<key>_epistemic`` is the standard deviation of the members' values of the summary (dex;
  over the members, not divided by n - 1: the spread of the equal mixture);
* ``<key>_err`` = scale x sqrt(mean of the members' calibrated variances + epistemic²): the
  standard deviation of the equal mixture of the members' Gaussians, times one factor per
  summary fitted so that 68.27 % of the validation truths lie within it;
* the posterior targets (each SFH bin, each log Z bin, T50, T90): the centre is the answer
  above (T50/T90: the members' mean median), the 68 % and 95 % half-widths are the mixture's
  (members' calibrated half-widths in quadrature with the spread of their centres, log Z
  weighted by mass as above) times a factor per target and level fitted on the validation split;
* ``ood`` is the members' mean score: each member measures the distance of the spectrum from
  the training set in its own embedding, and their mean keeps the single model's meaning
  (about 1 % of training-like spectra above 1; the fraction on the validation split is recorded
  in the calibration). The maximum would flag ~n times as many training-like spectra, and
  where members disagree the epistemic term already widens the errors.

**Which summary source**: the one whose calibrated 68 % interval is narrower on the validation
split (median half-width after its scale is fitted, so both cover 68.27 % there): the sharper
of two calibrated forecasts carries more information (Gneiting, Balabdaoui & Raftery 2007).

Without a calibration (member files given as a list, not combined into an ensemble file) the
summaries are averaged and every scale is 1: the errors are the mixture's, uncalibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .model import SUMMARY_KEYS, posterior_targets

#: The ways of making the ensemble's summaries (see the module docstring).
SUMMARY_SOURCES = ("averaged_summaries", "averaged_histories")
#: Share of the truths a calibrated 1-sigma (68 %) or 2-sigma (95 %) interval must cover.
LEVELS = {"68": 0.6827, "95": 0.9545}
#: The training-set metadata that every member of an ensemble must share, with how to compare.
SHARED_TRAINSET_KEYS = {
    "generator_digest": "training set (generator digest)",
    "wavelength_aa": "wavelengths",
    "filters": "filters",
    "age_bin_edges_yr": "age bins",
    "bin_age_yr": "age-bin midpoints",
    "logzsol_range": "log Z range",
    "norm_window_aa": "normalisation window",
    "emission_mask_halfwidth_kms": "emission-line mask",
    "emission_lines_aa": "emission lines",
}


def differences(first: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """What differs between two model files' ``trainset`` metadata, in words (empty: nothing)."""

    def same(a: Any, b: Any) -> bool:
        if a is None or b is None:
            return a is None and b is None
        if isinstance(a, dict) or isinstance(b, dict):
            return (
                isinstance(a, dict)
                and isinstance(b, dict)
                and a.keys() == b.keys()
                and all(same(a[k], b[k]) for k in a)
            )
        if isinstance(a, str) or isinstance(b, str):
            return a == b
        if isinstance(a, (list, tuple)) and a and isinstance(a[0], str):
            return list(a) == list(b)
        try:
            x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        except (TypeError, ValueError):
            return a == b
        return x.shape == y.shape and np.allclose(x, y, rtol=1e-9, atol=0)

    return [what for key, what in SHARED_TRAINSET_KEYS.items() if not same(first.get(key), other.get(key))]


def check_members_agree(trainsets: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    """ValueError unless every member was trained on the training set of the first (the same
    generator digest, wavelengths, bands, age bins, normalisation and line mask); the message
    names the files and what differs."""
    if len(trainsets) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(trainsets)} ({', '.join(names)})")
    for name, trainset in zip(names[1:], trainsets[1:]):
        differ = differences(trainsets[0], trainset)
        if differ:
            raise ValueError(
                f"{name} cannot join an ensemble with {names[0]}: {', '.join(differ)} differ; members must be "
                "trained on one training set (model.ensemble trains them so)"
            )


# ----------------------------------------------------------------------------- light weights


def summaries_from_histories(
    sfh: np.ndarray, logz: np.ndarray, bin_age_yr: np.ndarray, light_per_mass: dict[str, Any] | None
) -> dict[str, np.ndarray]:
    """The four summaries of histories ``sfh`` (n, n_bins: mass fractions) and ``logz`` (n,
    n_bins, dex), as the training set defines them (bin ages are the bin midpoints): mass-weighted
    exactly, light-weighted with the light per unit mass formed of :func:`fit_light_per_mass`
    (NaN without it)."""
    log_age = np.log10(np.asarray(bin_age_yr, dtype=float))
    out = {"mw_age": sfh @ log_age, "mw_logz": (sfh * logz).sum(-1)}
    if light_per_mass is None:
        out["lw_age"] = out["lw_logz"] = np.full(sfh.shape[:-1], np.nan)
        return out
    log_light = np.asarray(light_per_mass["log10_per_bin"]) + float(light_per_mass["logz_slope"]) * logz
    light = sfh * 10.0 ** (log_light - log_light.max(axis=-1, keepdims=True))
    light = light / light.sum(-1, keepdims=True)
    out["lw_age"] = light @ log_age
    out["lw_logz"] = (light * logz).sum(-1)
    return out


def fit_light_per_mass(
    sfh: np.ndarray, logz: np.ndarray, lw_age: np.ndarray, lw_logz: np.ndarray, bin_age_yr: np.ndarray
) -> dict[str, Any]:
    """A table of the light per unit mass formed of each age bin in the normalisation window:
    log10 L/M = a_bin + b log Z (relative; one slope b for all bins), fitted by least squares so
    that the light weights of the true histories give the true light-weighted age and log Z of
    the same spectra (validation split). The light of a spectrum also depends on its
    attenuation, which the table averages over; ``accuracy`` records how well it does on the
    spectra it was fitted to: bias and 1.4826 MAD scatter of (table - truth), dex."""
    from scipy.optimize import least_squares

    sfh, logz = np.asarray(sfh, dtype=float), np.asarray(logz, dtype=float)
    n_bins = sfh.shape[1]
    log_age = np.log10(np.asarray(bin_age_yr, dtype=float))

    def table(params: np.ndarray) -> dict[str, Any]:
        return {"log10_per_bin": params[:n_bins], "logz_slope": params[n_bins]}

    def residuals(params: np.ndarray) -> np.ndarray:
        lw = summaries_from_histories(sfh, logz, bin_age_yr, table(params))
        # the table is relative: its mean fixed at 0 by one more residual
        return np.concatenate([lw["lw_age"] - lw_age, lw["lw_logz"] - lw_logz, [params[:n_bins].mean()]])

    # start: light per mass falling as age^-0.8, about what stellar populations do
    start = np.append(-0.8 * (log_age - log_age.mean()), 0.0)
    fit = least_squares(residuals, start, method="trf", x_scale=1.0)
    result = {"log10_per_bin": fit.x[:n_bins].tolist(), "logz_slope": float(fit.x[n_bins])}
    lw = summaries_from_histories(sfh, logz, bin_age_yr, result)
    result["accuracy"] = {
        key: {"bias_dex": float(np.median(d)), "scatter_dex": float(1.4826 * np.median(np.abs(d - np.median(d))))}
        for key, d in (("lw_age", lw["lw_age"] - lw_age), ("lw_logz", lw["lw_logz"] - lw_logz))
    }
    return result


# ----------------------------------------------------------------------------- combination


def _stack(answers: Sequence[dict[str, np.ndarray]], key: str) -> np.ndarray:
    return np.stack([np.asarray(a[key], dtype=float) for a in answers])


def mixture_histories(answers: Sequence[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The members' SFHs (m, n, n_bins), the mean SFH and the mass-weighted mean log Z per bin
    (n, n_bins)."""
    sfh_m, logz_m = _stack(answers, "sfh"), _stack(answers, "logzsol")
    sfh = sfh_m.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        logz = np.where(sfh > 0, (sfh_m * logz_m).sum(0) / sfh_m.sum(0), logz_m.mean(0))
    return sfh_m, sfh, logz


def summary_candidates(
    answers: Sequence[dict[str, np.ndarray]],
    source: str,
    bin_age_yr: np.ndarray,
    light_per_mass: dict[str, Any] | None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per summary, for one ``source`` of :data:`SUMMARY_SOURCES`: the ensemble's value (n,), the
    members' values (m, n) whose spread is the epistemic term, and the members' calibrated
    1-sigma errors (m, n), all dex."""
    errors = {key: _stack(answers, f"{key}_err") for key in SUMMARY_KEYS}
    if source == "averaged_summaries":
        return {key: (_stack(answers, key).mean(0), _stack(answers, key), errors[key]) for key in SUMMARY_KEYS}
    if source != "averaged_histories":
        raise ValueError(f"unknown summary source {source!r}; known: {SUMMARY_SOURCES}")
    _, sfh, logz = mixture_histories(answers)
    mean = summaries_from_histories(sfh, logz, bin_age_yr, light_per_mass)
    members = [summaries_from_histories(a["sfh"], a["logzsol"], bin_age_yr, light_per_mass) for a in answers]
    return {key: (mean[key], np.stack([m[key] for m in members]), errors[key]) for key in SUMMARY_KEYS}


def _mixture_posteriors(answers: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Centre (n, n_targets) and, per level, the unscaled mixture half-width of every posterior
    target (see the module docstring)."""
    sfh_m, sfh, logz = mixture_histories(answers)
    n_bins = sfh.shape[1]
    centres = _stack(answers, "posterior_centre")  # (m, n, n_targets)
    weights = np.full(centres.shape, 1.0 / len(answers))
    with np.errstate(invalid="ignore", divide="ignore"):
        by_mass = sfh_m / sfh_m.sum(0, keepdims=True)
    weights[..., n_bins : 2 * n_bins] = np.where(np.isfinite(by_mass), by_mass, 1.0 / len(answers))
    centre = np.concatenate([sfh, logz, (weights[..., 2 * n_bins :] * centres[..., 2 * n_bins :]).sum(0)], axis=-1)
    spread2 = (weights * (centres - centre) ** 2).sum(0)
    out = {"posterior_centre": centre}
    for level in LEVELS:
        halves = _stack(answers, f"posterior_halfwidth_{level}")
        out[f"posterior_halfwidth_{level}"] = np.sqrt((weights * halves**2).sum(0) + spread2)
    return out


def combined_answer(
    answers: Sequence[dict[str, np.ndarray]], calibration: dict[str, Any] | None, bin_age_yr: np.ndarray
) -> dict[str, np.ndarray]:
    """The ensemble's answer from its members' (:meth:`sfh_pipeline.predict.Predictor.answer`,
    one per member, same spectra), in the same keys plus ``<key>_epistemic`` (dex), before the
    OOD widening; ``calibration`` of :func:`fit_calibration`, or None (averaged summaries, every
    scale 1)."""
    _, sfh, logz = mixture_histories(answers)
    ood_m = _stack(answers, "ood")
    scored = np.isfinite(ood_m)  # members without an OOD reference have NaN scores
    count = scored.sum(0)
    ood = np.where(count > 0, np.where(scored, ood_m, 0.0).sum(0) / np.maximum(count, 1), np.nan)
    out: dict[str, np.ndarray] = {"sfh": sfh, "logzsol": logz, "ood": ood}
    summaries = (calibration or {}).get("summaries", {})
    light = (calibration or {}).get("light_per_mass")
    by_source: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for key in SUMMARY_KEYS:
        entry = summaries.get(key, {})
        source = entry.get("source", "averaged_summaries")
        if source not in by_source:
            by_source[source] = summary_candidates(answers, source, bin_age_yr, light)
        value, members, errors = by_source[source][key]
        spread = members.std(0)
        out[key] = value
        out[f"{key}_epistemic"] = spread
        out[f"{key}_err"] = float(entry.get("error_scale", 1.0)) * np.sqrt((errors**2).mean(0) + spread**2)
    posteriors = _mixture_posteriors(answers)
    out["posterior_centre"] = posteriors["posterior_centre"]
    scales = (calibration or {}).get("posterior_scale", {})
    for level in LEVELS:
        scale = np.asarray(scales.get(level, 1.0), dtype=float)
        out[f"posterior_halfwidth_{level}"] = posteriors[f"posterior_halfwidth_{level}"] * scale
    return out


# ----------------------------------------------------------------------------- calibration


def _scale_for(residual: np.ndarray, sigma: np.ndarray, level: float) -> float:
    """The factor on ``sigma`` that makes a share ``level`` of |residual| <= factor x sigma (1
    where nothing is finite)."""
    z = np.abs(residual) / sigma
    z = z[np.isfinite(z)]
    return float(np.quantile(z, level)) if z.size else 1.0


def fit_calibration(
    answers: Sequence[dict[str, np.ndarray]], truths: dict[str, np.ndarray], bin_age_yr: np.ndarray
) -> dict[str, Any]:
    """The ensemble's calibration on the validation split: the members' answers on it
    (:meth:`sfh_pipeline.predict.Predictor.answer`) and its truths (``true_sfh``,
    ``true_logzsol``, ``true_formation`` (n, 2, log yr) and ``true_<key>`` of the four summaries).

    Returns ``summaries``: per summary the chosen ``source``, its ``error_scale`` and, per
    candidate source, the measurement that chose it (``bias_dex``, ``scatter_dex`` (1.4826 MAD),
    ``rms_dex`` of the answer - truth, ``coverage_68_unscaled`` of the mixture's errors,
    ``error_scale``, ``median_sigma_dex`` after scaling, ``median_epistemic_dex``);
    ``light_per_mass`` (:func:`fit_light_per_mass`); ``posterior_scale`` per level ("68", "95"):
    one factor per posterior target; ``ood_above_1``: share of the validation spectra whose
    ensemble OOD score exceeds 1; ``n_validation``.
    """
    light = fit_light_per_mass(
        truths["true_sfh"], truths["true_logzsol"], truths["true_lw_age"], truths["true_lw_logz"], bin_age_yr
    )
    summaries: dict[str, Any] = {}
    candidates = {source: summary_candidates(answers, source, bin_age_yr, light) for source in SUMMARY_SOURCES}
    for key in SUMMARY_KEYS:
        truth = np.asarray(truths[f"true_{key}"], dtype=float)
        measured = {}
        for source, values in candidates.items():
            value, members, errors = values[key]
            spread = members.std(0)
            sigma = np.sqrt((errors**2).mean(0) + spread**2)
            delta = value - truth
            scale = _scale_for(delta, sigma, LEVELS["68"])
            measured[source] = {
                "bias_dex": float(np.median(delta)),
                "scatter_dex": float(1.4826 * np.median(np.abs(delta - np.median(delta)))),
                "rms_dex": float(np.sqrt(np.mean(delta**2))),
                "coverage_68_unscaled": float(np.mean(np.abs(delta) <= sigma)),
                "error_scale": scale,
                "median_sigma_dex": float(scale * np.median(sigma)),
                "median_epistemic_dex": float(np.median(spread)),
            }
        chosen = min(SUMMARY_SOURCES, key=lambda s: measured[s]["median_sigma_dex"])
        summaries[key] = {"source": chosen, "error_scale": measured[chosen]["error_scale"], "candidates": measured}

    values, counts = posterior_targets(
        {
            "true_sfh": truths["true_sfh"],
            "true_logzsol": truths["true_logzsol"],
            "true_formation": truths["true_formation"],
        }
    )
    mixture = _mixture_posteriors(answers)
    residual = mixture["posterior_centre"] - values
    posterior_scale = {}
    for level, share in LEVELS.items():
        half = mixture[f"posterior_halfwidth_{level}"]
        posterior_scale[level] = [
            _scale_for(residual[counts[:, t], t], half[counts[:, t], t], share) for t in range(values.shape[1])
        ]
    ood = combined_answer(answers, None, bin_age_yr)["ood"]
    return {
        "summaries": summaries,
        "light_per_mass": light,
        "posterior_scale": posterior_scale,
        "ood_above_1": float(np.mean(ood > 1)) if np.isfinite(ood).any() else None,
        "n_validation": int(len(truths["true_sfh"])),
    }
