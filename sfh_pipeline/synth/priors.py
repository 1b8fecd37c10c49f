"""Prior over star-formation and metallicity histories of the synthetic training set.

The labels of the training set are, for ``n_bins`` age bins in lookback time
(edges ``edges_yr``, first edge 0), the fraction of the total stellar mass
*formed* in each bin (no mass-loss correction; rows sum to 1) and one
metallicity ``log10(Z/Z_sun)`` per bin. Within a bin the SFR is constant when
spectra are synthesised; the prior below only sets how much mass each bin gets.

Conventions
-----------
* Times are in years. ``lookback`` is measured back from the observation;
  ``x = t_form - lookback`` is the time elapsed since star formation began
  (``t_form`` is the formation lookback time).  Bin index 0 is the youngest.
* Parametric families are evaluated on a fine lookback grid (``N_FINE``
  log-spaced points from ``FINE_MIN_YR`` to the last edge, plus 0 and the bin
  edges) and integrated over the bins by :func:`bin_mass_fractions`, which is
  exact for an SFR that is piecewise linear on that grid.
* ``t_form`` is uniform in linear time between ``T_FORM_MIN_YR`` (1 Gyr) and
  ``t_max = min(universe_age_yr, edges_yr[-1])``; SFR = 0 before ``t_form``.
* Every random number comes from the ``numpy.random.Generator`` passed in, in a
  fixed order, so the same generator state gives bit-identical output.

SFH families (``SFH_FAMILIES``; parameter ranges are the ones drawn here)
------------------------------------------------------------------------
``delayed_tau``       SFR ∝ x exp(-x/τ); τ log-uniform 0.1–10 Gyr.
                      Functional form: Carnall et al. 2019, ApJ 873, 44 (sect. 2).
``exp_declining``     SFR ∝ exp(-x/τ); τ log-uniform 0.1–10 Gyr (Carnall+2019).
``exp_rising``        SFR ∝ exp(+x/τ); τ log-uniform 0.5–10 Gyr ("inverted-τ"
                      models: Maraston et al. 2010, MNRAS 407, 830; Pforr et al.
                      2012, MNRAS 422, 3285).
``lognormal``         SFR ∝ x^-1 exp(-(ln x - T0)^2 / 2σ^2) (Gladders et al. 2013,
                      ApJ 770, 64; Carnall+2019), with x instead of cosmic time;
                      σ uniform 0.2–1.2, peak x_peak = exp(T0 - σ^2) uniform in
                      (0.05, 1) t_form.
``double_power_law``  SFR ∝ [(x/τ)^α + (x/τ)^-β]^-1 (Carnall+2019, after Behroozi
                      et al. 2013), x in place of cosmic time; α, β log-uniform
                      0.01–1000 (Carnall+2019's ranges), τ uniform in (0, t_form).
``constant_burst``    slowly varying SFR ∝ exp(k x / t_form), k uniform (-1, 1)
                      (SFR changes by ≤ e over the whole history), plus 1 or 2
                      (equal odds) short bursts at lookback log-uniform
                      3 Myr–1 Gyr holding a mass fraction log-uniform 1e-3–0.5 each
                      (with two bursts, the first one's fraction is of the mass
                      not in the second, so the smooth part keeps ≥ 25 %).
                      Cf. Kauffmann et al. 2003 (MNRAS 341, 33), Ciesla et al. 2017.
``quenched``          one of delayed_tau, exp_declining, exp_rising, lognormal,
                      double_power_law or the slowly varying constant (equal odds)
                      truncated at a quenching lookback t_q log-uniform 10 Myr–5 Gyr
                      (Simha et al. 2014; Ciesla et al. 2016,
                      A&A 585, A43), with t_form ≥ t_q + 1 Gyr. After t_q the SFR
                      is 0 (half the draws) or a residual specific SFR log-uniform
                      1e-14–1e-13 yr^-1 of the mass formed before t_q (far below the
                      ~1e-11 yr^-1 quiescence threshold): ≤ 5e-4 of the mass forms
                      after quenching.
``continuity``        non-parametric, directly in the bins: log10(SFR_i/SFR_i+1)
                      ~ Student-t(ν=2, scale 0.3) clipped to ±5 (Leja et al. 2019,
                      ApJ 876, 3); mass = SFR × (bin width within t_max).
``dirichlet``         mass fractions ~ Dirichlet(α) over the bins within t_max,
                      α = 1 by default (flat on the simplex; ``dirichlet_alpha``).
                      Leja et al. 2017, ApJ 837, 170 (stick-breaking mass fractions).
                      NB: Leja+2019 / Prospector put the Dirichlet on SFR fractions;
                      here it is on the labels themselves, so each bin's mean
                      fraction is 1/n_bins.
``old_plus_young``    an old host and a young population with nothing between, as
                      star-forming disc light seen over an old bulge or thick disc: the
                      host forms from t_form uniform 5 Gyr–t_max with SFR ∝ exp(-x/τ),
                      τ log-uniform 0.1–1 Gyr, and stops at lookback max(t_form - 5τ,
                      2 Gyr); the young part is (equal odds) one burst at lookback
                      log-uniform 3 Myr–500 Myr or a constant SFR over the last T,
                      T log-uniform 10–500 Myr, holding a mass fraction log-uniform
                      1e-4–0.5 by default (young light fractions from < 1 % to > 95 %;
                      ``young_mass_fraction``). Its
                      metallicity is two-phase (:func:`two_phase_metallicity`). Weight 0
                      unless the config names it: the other families rarely make such
                      mixtures, on which a network trained without them is 0.2–0.3 dex
                      too old (bench/young_regime.py).

Metallicity components (``METALLICITY_COMPONENTS``), see :func:`sample_metallicity`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

SFH_FAMILIES: tuple[str, ...] = (
    "delayed_tau",
    "exp_declining",
    "exp_rising",
    "lognormal",
    "double_power_law",
    "constant_burst",
    "quenched",
    "continuity",
    "dirichlet",
    "old_plus_young",
)

#: Relative family weights when the config gives none. Non-parametric families get
#: the largest share because they impose the weakest shape priors on ages
#: (Carnall+2019; Leja+2019); bursts and quenching cover the star-forming discs and
#: the bulge / inter-arm regions of nearby (PHANGS-like) galaxies.
DEFAULT_FAMILY_WEIGHTS: dict[str, float] = {
    "delayed_tau": 1.5,
    "exp_declining": 1.0,
    "exp_rising": 0.75,
    "lognormal": 1.0,
    "double_power_law": 1.0,
    "constant_burst": 1.5,
    "quenched": 1.0,
    "continuity": 2.0,
    "dirichlet": 1.0,
    # named by the config where wanted: at 0 the training sets made before it are unchanged
    "old_plus_young": 0.0,
}

METALLICITY_COMPONENTS: tuple[str, ...] = ("closed_box", "flat", "walk")
DEFAULT_METALLICITY_WEIGHTS: dict[str, float] = {"closed_box": 0.5, "flat": 0.2, "walk": 0.3}

T_FORM_MIN_YR = 1.0e9  #: earliest allowed onset of star formation (lookback), yr
T_MAX_MIN_YR = 2.0e9  #: sample_sfh needs min(universe age, last edge) at least this, yr
N_FINE = 1000  #: log-spaced points of the fine lookback grid
FINE_MIN_YR = 1.0e5  #: first non-zero point of the fine grid, yr


@dataclass(frozen=True)
class SFHDraw:
    """A batch of star-formation histories drawn by :func:`sample_sfh`.

    Attributes
    ----------
    mass_fractions : ndarray, shape (n, n_bins), float64
        Fraction of the total stellar mass formed in each bin (youngest first);
        rows are >= 0 and sum to 1.
    family : ndarray, shape (n,), int16
        Index into ``SFH_FAMILIES``.
    formation_lookback_yr : ndarray, shape (n,), float64
        Lookback time at which star formation began, yr (``t_max`` for the
        non-parametric families).
    quench_lookback_yr : ndarray, shape (n,), float64
        Quenching lookback time t_q for ``quenched`` draws, yr; NaN otherwise.
    """

    mass_fractions: np.ndarray
    family: np.ndarray
    formation_lookback_yr: np.ndarray
    quench_lookback_yr: np.ndarray

    @property
    def family_names(self) -> np.ndarray:
        """Family name of each draw, shape (n,)."""
        return np.asarray(SFH_FAMILIES)[self.family]


# --------------------------------------------------------------------------- binning


def _check_increasing(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be a 1-D array of >= 2 finite values, got shape {arr.shape}")
    if np.any(np.diff(arr) <= 0):
        raise ValueError(f"{what} must be strictly increasing, got {arr.tolist()}")
    if arr[0] < 0:
        raise ValueError(f"{what} must be >= 0 (lookback times), got first value {arr[0]}")
    return arr


def _bin_weights(lookback: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Matrix W (n_t, n_bins) with ``(sfr @ W)[j]`` = ∫_bin j of the piecewise-linear SFR.

    The bin edges are inserted into the grid (SFR linearly interpolated there) and
    each sub-interval is integrated with the trapezoid rule, which is exact for a
    linear function; the SFR is 0 outside ``[lookback[0], lookback[-1]]``.
    """
    n_t, n_bins = lookback.size, edges.size - 1
    weights = np.zeros((n_t, n_bins))
    lo, hi = max(lookback[0], edges[0]), min(lookback[-1], edges[-1])
    pts = np.union1d(lookback, edges)
    pts = pts[(pts >= lo) & (pts <= hi)]
    if pts.size < 2:
        return weights
    k = np.clip(np.searchsorted(lookback, pts, side="right") - 1, 0, n_t - 2)
    w_hi = (pts - lookback[k]) / (lookback[k + 1] - lookback[k])
    half_dx = 0.5 * np.diff(pts)
    b = np.searchsorted(edges, 0.5 * (pts[:-1] + pts[1:]), side="right") - 1
    for end in (slice(None, -1), slice(1, None)):  # both ends of each sub-interval
        np.add.at(weights, (k[end], b), half_dx * (1.0 - w_hi[end]))
        np.add.at(weights, (k[end] + 1, b), half_dx * w_hi[end])
    return weights


def bin_mass_fractions(sfr: np.ndarray, lookback_yr: np.ndarray, edges_yr: np.ndarray) -> np.ndarray:
    """Fraction of the mass formed in each bin by an SFR sampled on a lookback grid.

    Parameters
    ----------
    sfr : ndarray, shape (..., n_t)
        Star-formation rate (any units, >= 0) at ``lookback_yr``; taken piecewise
        linear between grid points and 0 outside the grid.
    lookback_yr : ndarray, shape (n_t,)
        Strictly increasing lookback times, yr.
    edges_yr : ndarray, shape (n_bins + 1,)
        Strictly increasing bin edges in lookback time, yr (>= 0).

    Returns
    -------
    ndarray, shape (..., n_bins)
        Mass fractions (each row sums to 1). Exact for a piecewise-linear SFR: the
        edges are inserted into the grid and the trapezoid rule applied, all folded
        into one (n_t, n_bins) matrix so the whole batch is one matrix product.

    Raises
    ------
    ValueError
        Non-increasing grid or edges, shape mismatch, negative or non-finite SFR,
        or a row forming no mass inside the bins.
    """
    lookback = _check_increasing(lookback_yr, "lookback_yr")
    edges = _check_increasing(edges_yr, "edges_yr")
    sfr = np.asarray(sfr, dtype=np.float64)
    if sfr.shape[-1:] != lookback.shape:
        raise ValueError(f"sfr last axis ({sfr.shape}) must match lookback_yr ({lookback.size})")
    if not np.all(np.isfinite(sfr)) or np.any(sfr < 0):
        raise ValueError("sfr must be finite and >= 0")
    mass = sfr @ _bin_weights(lookback, edges)
    total = mass.sum(axis=-1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("some SFR rows form no mass inside [edges_yr[0], edges_yr[-1]]")
    return mass / total


def formation_times(
    mass_fractions: np.ndarray, edges_yr: np.ndarray, fractions=(0.5, 0.9), floor_yr: float = FINE_MIN_YR
) -> np.ndarray:
    """log10 lookback times (yr) by which ``fractions`` of the mass had formed (T50, T90, ...).

    Parameters
    ----------
    mass_fractions : ndarray, shape (..., n_bins)
        Mass fraction formed in each lookback-time bin (rows need not be normalised; they are).
    edges_yr : ndarray, shape (n_bins + 1,)
        Increasing bin edges in lookback time, yr.
    fractions : sequence of float in (0, 1)
        Cumulative fractions of the mass, counted from the oldest star onwards.
    floor_yr : float
        Lower bound of the returned times (a crossing in the youngest bin may lie at ~0).

    Returns
    -------
    ndarray, shape (..., len(fractions))
        log10 of the lookback time, yr; the star formation is taken uniform in time inside a
        bin, so the cumulative mass is piecewise linear in lookback time. NaN for rows with no mass.
    """
    edges = _check_increasing(edges_yr, "edges_yr")
    m = np.asarray(mass_fractions, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = m / m.sum(axis=-1, keepdims=True)
    # formed before each edge (lookback >= edge): 1 at the first edge, 0 at the last
    before = np.concatenate([np.cumsum(m[..., ::-1], axis=-1)[..., ::-1], np.zeros(m.shape[:-1] + (1,))], axis=-1)
    out = np.empty(m.shape[:-1] + (len(fractions),))
    for j, f in enumerate(fractions):
        # the bin k whose older edge has less than f formed and whose younger edge has at least f
        k = np.clip(np.sum(before >= f, axis=-1) - 1, 0, edges.size - 2)
        lo, hi = (
            np.take_along_axis(before, k[..., None], -1)[..., 0],
            np.take_along_axis(before, k[..., None] + 1, -1)[..., 0],
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(lo > hi, (lo - f) / (lo - hi), 0.0)
        t = edges[k] + share * (edges[k + 1] - edges[k])
        out[..., j] = np.log10(np.maximum(t, floor_yr))
    out[~np.isfinite(m).all(axis=-1)] = np.nan
    return out


@dataclass(frozen=True)
class _Grid:
    """Everything the family samplers need about the binning (internal)."""

    edges: np.ndarray  # (n_bins + 1,) yr
    t_max: float  # min(universe age, last edge), yr
    lookback: np.ndarray  # (n_t,) fine grid, yr
    weights: np.ndarray  # (n_t, n_bins) from _bin_weights
    widths: np.ndarray  # (n_bins,) bin widths within [0, t_max], yr
    dirichlet_alpha: float
    young_mass_fraction: tuple[float, float]  # of old_plus_young, log-uniform bounds

    def masses(self, sfr: np.ndarray) -> np.ndarray:
        return sfr @ self.weights

    def overlap(self, t: np.ndarray) -> np.ndarray:
        """(m, n_bins) length of each bin within lookback [0, t], yr."""
        return np.clip(np.minimum(self.edges[1:], t[:, None]) - self.edges[:-1], 0.0, None)


# ------------------------------------------------------------------ smooth shapes
# Each returns ln SFR (arbitrary normalisation), shape (m, n_t), given the time since
# formation x > 0 (yr, shape (m, n_t)) and t_form (yr, shape (m,)); values where
# x <= 0 are masked by the caller.


def _loguniform(rng: np.random.Generator, lo: float, hi: float, size) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def _shape_delayed_tau(rng, x, t_form):
    tau = _loguniform(rng, 1e8, 1e10, t_form.size)[:, None]
    return np.log(x) - x / tau


def _shape_exp_declining(rng, x, t_form):
    tau = _loguniform(rng, 1e8, 1e10, t_form.size)[:, None]
    return -x / tau


def _shape_exp_rising(rng, x, t_form):
    tau = _loguniform(rng, 5e8, 1e10, t_form.size)[:, None]
    return x / tau


def _shape_lognormal(rng, x, t_form):
    sigma = rng.uniform(0.2, 1.2, t_form.size)[:, None]
    x_peak = rng.uniform(0.05, 1.0, t_form.size)[:, None] * t_form[:, None]
    t0 = np.log(x_peak) + sigma**2
    lnx = np.log(x)
    return -lnx - (lnx - t0) ** 2 / (2.0 * sigma**2)


def _shape_double_power_law(rng, x, t_form):
    alpha = _loguniform(rng, 0.01, 1000.0, t_form.size)[:, None]
    beta = _loguniform(rng, 0.01, 1000.0, t_form.size)[:, None]
    tau = rng.uniform(0.0, 1.0, t_form.size)[:, None] * t_form[:, None]
    u = np.log(x) - np.log(np.maximum(tau, 1.0))
    return -np.logaddexp(alpha * u, -beta * u)


def _shape_constant(rng, x, t_form):
    k = rng.uniform(-1.0, 1.0, t_form.size)[:, None]
    return k * x / t_form[:, None]


_QUENCH_SHAPES: dict[str, Callable] = {
    "delayed_tau": _shape_delayed_tau,
    "exp_declining": _shape_exp_declining,
    "exp_rising": _shape_exp_rising,
    "lognormal": _shape_lognormal,
    "double_power_law": _shape_double_power_law,
    "constant": _shape_constant,
}


def _draw_t_form(rng, grid: _Grid, lower: np.ndarray) -> np.ndarray:
    """t_form uniform in [lower, t_max] (linear time), yr."""
    return lower + rng.random(lower.size) * (grid.t_max - lower)


def _smooth_masses(grid: _Grid, log_sfr: np.ndarray, t_form: np.ndarray, t_quench=None) -> np.ndarray:
    """Bin masses of exp(log_sfr) restricted to t_quench < lookback < t_form."""
    valid = grid.lookback[None, :] < t_form[:, None]
    if t_quench is not None:
        valid &= grid.lookback[None, :] > t_quench[:, None]
    log_sfr = np.where(valid, log_sfr, -np.inf)
    sfr = np.exp(log_sfr - log_sfr.max(axis=1, keepdims=True))
    return grid.masses(sfr)


def _time_since_formation(grid: _Grid, t_form: np.ndarray) -> np.ndarray:
    # Clamp to >= 1 yr so logs stay finite; those points are masked anyway.
    return np.maximum(t_form[:, None] - grid.lookback[None, :], 1.0)


# ------------------------------------------------------------------ family samplers
# Each: (rng, grid, m) -> (masses (m, n_bins) unnormalised, t_form (m,), t_quench (m,)).


def _parametric(shape: Callable) -> Callable:
    def sample(rng, grid: _Grid, m: int):
        t_form = _draw_t_form(rng, grid, np.full(m, T_FORM_MIN_YR))
        log_sfr = shape(rng, _time_since_formation(grid, t_form), t_form)
        return _smooth_masses(grid, log_sfr, t_form), t_form, np.full(m, np.nan)

    sample.__doc__ = f"Parametric family with shape {shape.__name__}; see the module docstring."
    return sample


def _sample_constant_burst(rng, grid: _Grid, m: int):
    """Slowly varying SFR plus 1-2 bursts younger than 1 Gyr (module docstring)."""
    t_form = _draw_t_form(rng, grid, np.full(m, T_FORM_MIN_YR))
    base = _smooth_masses(grid, _shape_constant(rng, _time_since_formation(grid, t_form), t_form), t_form)
    base /= base.sum(axis=1, keepdims=True)
    two = rng.random(m) < 0.5
    age = _loguniform(rng, 3e6, 1e9, (m, 2))
    frac = _loguniform(rng, 1e-3, 0.5, (m, 2))
    frac[:, 1] *= two
    rows = np.arange(m)
    n_bins = grid.edges.size - 1
    b = np.clip(np.searchsorted(grid.edges, age, side="right") - 1, 0, n_bins - 1)
    out = (1.0 - frac[:, 1:]) * (1.0 - frac[:, :1]) * base
    out[rows, b[:, 0]] += (1.0 - frac[:, 1]) * frac[:, 0]
    out[rows, b[:, 1]] += frac[:, 1]
    return out, t_form, np.full(m, np.nan)


def _sample_quenched(rng, grid: _Grid, m: int):
    """A smooth shape truncated at t_q, optionally with a tiny residual (module docstring)."""
    t_q = _loguniform(rng, 1e7, min(5e9, grid.t_max - T_FORM_MIN_YR), m)
    t_form = _draw_t_form(rng, grid, np.maximum(T_FORM_MIN_YR, t_q + 1e9))
    x = _time_since_formation(grid, t_form)
    which = rng.integers(0, len(_QUENCH_SHAPES), m)
    log_sfr = np.empty_like(x)
    for j, shape in enumerate(_QUENCH_SHAPES.values()):
        rows = np.flatnonzero(which == j)
        log_sfr[rows] = shape(rng, x[rows], t_form[rows])
    masses = _smooth_masses(grid, log_sfr, t_form, t_q)
    ssfr = _loguniform(rng, 1e-14, 1e-13, m) * (rng.random(m) < 0.5)
    masses += (ssfr * masses.sum(axis=1))[:, None] * grid.overlap(t_q)
    return masses, t_form, t_q


def _sample_continuity(rng, grid: _Grid, m: int):
    """Leja+2019 continuity prior: Student-t(2, 0.3) log10 SFR ratios, clipped to ±5."""
    n_bins = grid.edges.size - 1
    ratio = np.clip(0.3 * rng.standard_t(2.0, size=(m, n_bins - 1)), -5.0, 5.0)
    log_sfr = np.concatenate([np.zeros((m, 1)), -np.cumsum(ratio, axis=1)], axis=1)
    sfr = 10.0 ** (log_sfr - log_sfr.max(axis=1, keepdims=True))
    return sfr * grid.widths, np.full(m, grid.t_max), np.full(m, np.nan)


def _sample_dirichlet(rng, grid: _Grid, m: int):
    """SFR fractions ~ Dirichlet(alpha) over the bins inside t_max (Leja+2017, 2019).

    As in Prospector's Dirichlet SFH, the Dirichlet is on the fractions of the mean SFR
    per bin (mass = SFR fraction x bin width), so its mean is a constant SFR; a Dirichlet
    on the mass fractions would put most of the mass in the many narrow young bins.
    """
    inside = grid.widths > 0
    out = np.zeros((m, grid.widths.size))
    out[:, inside] = rng.dirichlet(np.full(int(inside.sum()), grid.dirichlet_alpha), size=m)
    return out * grid.widths, np.full(m, grid.t_max), np.full(m, np.nan)


#: Bins younger than this (lookback, yr) are the young part of ``old_plus_young``.
YOUNG_PART_MAX_YR = 1.0e9


def _sample_old_plus_young(rng, grid: _Grid, m: int):
    """An old host and a young burst or constant SFR with nothing between (module docstring)."""
    t_form = _draw_t_form(rng, grid, np.full(m, min(5.0e9, grid.t_max)))
    tau = _loguniform(rng, 1e8, 1e9, m)
    t_stop = np.minimum(np.maximum(t_form - 5.0 * tau, 2.0e9), t_form)
    log_sfr = -_time_since_formation(grid, t_form) / tau[:, None]
    host = _smooth_masses(grid, log_sfr, t_form, t_stop)
    host /= host.sum(axis=1, keepdims=True)
    burst = rng.random(m) < 0.5
    age = _loguniform(rng, 3e6, 5e8, m)
    duration = _loguniform(rng, 1e7, 5e8, m)
    young = grid.overlap(duration) / duration[:, None]
    b = np.clip(np.searchsorted(grid.edges, age, side="right") - 1, 0, grid.edges.size - 2)
    young[burst] = 0.0
    young[np.flatnonzero(burst), b[burst]] = 1.0
    fraction = _loguniform(rng, *grid.young_mass_fraction, m)[:, None]
    return (1.0 - fraction) * host + fraction * young, t_form, np.full(m, np.nan)


_SAMPLERS: dict[str, Callable] = {
    "delayed_tau": _parametric(_shape_delayed_tau),
    "exp_declining": _parametric(_shape_exp_declining),
    "exp_rising": _parametric(_shape_exp_rising),
    "lognormal": _parametric(_shape_lognormal),
    "double_power_law": _parametric(_shape_double_power_law),
    "constant_burst": _sample_constant_burst,
    "quenched": _sample_quenched,
    "continuity": _sample_continuity,
    "dirichlet": _sample_dirichlet,
    "old_plus_young": _sample_old_plus_young,
}
assert tuple(_SAMPLERS) == SFH_FAMILIES


def _probabilities(
    weights: Mapping[str, float] | None, valid: tuple[str, ...], default: Mapping[str, float], what: str
) -> np.ndarray:
    """Normalised probabilities over ``valid`` from a (partial) name -> weight mapping."""
    weights = default if weights is None else weights
    unknown = [name for name in weights if name not in valid]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; valid names: {', '.join(valid)}")
    p = np.array([float(weights.get(name, 0.0)) for name in valid])
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{what} weights must be finite and >= 0, got {dict(weights)}")
    if p.sum() <= 0:
        raise ValueError(f"{what} weights are all zero: {dict(weights)}")
    return p / p.sum()


def sample_sfh(
    rng: np.random.Generator,
    edges_yr: np.ndarray,
    n: int,
    family_weights: dict[str, float] | None = None,
    universe_age_yr: float = 1.38e10,
    *,
    dirichlet_alpha: float = 1.0,
    young_mass_fraction: tuple[float, float] = (1e-4, 0.5),
) -> SFHDraw:
    """Draw ``n`` star-formation histories, binned into mass fractions.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness (same state -> bit-identical output).
    edges_yr : array_like, shape (n_bins + 1,)
        Bin edges in lookback time, yr: strictly increasing, first 0.
    n : int
        Number of draws (>= 0).
    family_weights : dict, optional
        Relative weight per family name (families not listed get 0);
        ``DEFAULT_FAMILY_WEIGHTS`` when None. Each draw picks its family
        independently with these probabilities.
    universe_age_yr : float
        Age of the Universe at the galaxy, yr; no star forms at larger lookback
        (bins beyond it get zero mass).
    dirichlet_alpha : float
        Concentration of the ``dirichlet`` family (1 = flat on the simplex;
        < 1 favours a few dominant bins, > 1 favours equal fractions).
    young_mass_fraction : (float, float)
        Bounds of the young part's mass fraction in ``old_plus_young``, drawn
        log-uniform: 0 < low <= high < 1. With a low bound of 1e-4 a quarter of the
        family's draws (one of 3.7 decades) hold < 1e-3 of their mass young: young light
        that barely shows in an old spectrum. With 1e-2 every young part outshines much
        of its host.

    Returns
    -------
    SFHDraw

    Raises
    ------
    ValueError
        Unknown family name (the message lists the valid ones), all-zero or
        negative weights, bad edges, ``min(universe_age_yr, edges_yr[-1]) <
        T_MAX_MIN_YR``, ``n < 0`` or ``dirichlet_alpha <= 0``.

    Notes
    -----
    Family ranges and references are listed in the module docstring.
    """
    p = _probabilities(family_weights, SFH_FAMILIES, DEFAULT_FAMILY_WEIGHTS, "SFH family")
    edges = _check_increasing(edges_yr, "edges_yr")
    if edges[0] != 0:
        raise ValueError(f"edges_yr must start at 0, got {edges[0]}")
    t_max = min(float(universe_age_yr), float(edges[-1]))
    if not np.isfinite(t_max) or t_max < T_MAX_MIN_YR:
        raise ValueError(f"min(universe_age_yr, edges_yr[-1]) = {t_max:.3g} yr must be >= {T_MAX_MIN_YR:.1g} yr")
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n}")
    if not (np.isfinite(dirichlet_alpha) and dirichlet_alpha > 0):
        raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}")
    low, high = (float(v) for v in young_mass_fraction)
    if not 0 < low <= high < 1:
        raise ValueError(f"young_mass_fraction must be 0 < low <= high < 1, got {young_mass_fraction}")
    n = int(n)
    fine = np.geomspace(FINE_MIN_YR, edges[-1], N_FINE) if edges[-1] > FINE_MIN_YR else np.array([])
    lookback = np.union1d(np.concatenate([[0.0], fine]), edges)
    grid = _Grid(
        edges=edges,
        t_max=t_max,
        lookback=lookback,
        weights=_bin_weights(lookback, edges),
        widths=np.clip(np.minimum(edges[1:], t_max) - edges[:-1], 0.0, None),
        dirichlet_alpha=float(dirichlet_alpha),
        young_mass_fraction=(low, high),
    )

    family = rng.choice(len(SFH_FAMILIES), size=n, p=p).astype(np.int16)
    masses = np.zeros((n, edges.size - 1))
    t_form = np.empty(n)
    t_quench = np.full(n, np.nan)
    for k, name in enumerate(SFH_FAMILIES):
        rows = np.flatnonzero(family == k)
        if rows.size:
            masses[rows], t_form[rows], t_quench[rows] = _SAMPLERS[name](rng, grid, rows.size)
    fractions = masses / masses.sum(axis=1, keepdims=True)
    return SFHDraw(mass_fractions=fractions, family=family, formation_lookback_yr=t_form, quench_lookback_yr=t_quench)


# ------------------------------------------------------------------ metallicity


def sample_metallicity(
    rng: np.random.Generator,
    mass_fractions: np.ndarray,
    logz_range: tuple[float, float],
    scatter_dex: float = 0.1,
    components: dict[str, float] | None = None,
) -> np.ndarray:
    """Draw a metallicity history log10(Z/Z_sun) per age bin for each SFH.

    Each row picks one enrichment history (weights ``components``, default
    ``DEFAULT_METALLICITY_WEIGHTS``); with ``lo, hi = logz_range``:

    ``closed_box``
        Monotonic, closed-box-like enrichment driven by the SFH: with ``c`` the
        fraction of mass formed before the middle of each bin (counted from the
        oldest bin), ``logZ = z_i + (z_f - z_i) c**p``; ``z_i`` uniform in the low
        half ``[lo, (lo + hi)/2]``, ``z_f`` uniform in ``[z_i, hi]``, curvature
        ``p`` log-uniform 0.25–3 (p < 1: fast early enrichment as in a closed box,
        Z ∝ ln(1/μ_gas), e.g. Tinsley 1980; p > 1: late enrichment). Non-decreasing
        towards younger bins; zero-mass bins take the value of their neighbours.
    ``flat``
        One metallicity for all bins, uniform in ``[lo, hi]`` (the usual single-Z
        SSP-fitting prior).
    ``walk``
        Smooth random walk from the oldest bin (start uniform in ``[lo, hi]``),
        drift uniform ±0.1 dex per bin plus N(0, 0.1 dex) steps, smoothed with a
        (1, 2, 1)/4 kernel: covers declining (dilution by metal-poor accretion) and
        non-monotonic histories, independent of the SFH.

    Then Gaussian scatter of ``scatter_dex`` is added per bin and everything is
    clipped to ``logz_range``.

    Parameters
    ----------
    rng : numpy.random.Generator
    mass_fractions : ndarray, shape (n, n_bins)
        Mass fractions, youngest bin first (>= 0, rows with positive sum).
    logz_range : (float, float)
        Range of log10(Z/Z_sun) of the SSP library, e.g. (-2.3, 0.7) for BC03.
    scatter_dex : float
        Per-bin Gaussian scatter, dex (>= 0).
    components : dict, optional
        Relative weights of ``METALLICITY_COMPONENTS`` (unlisted ones get 0).

    Returns
    -------
    ndarray, shape (n, n_bins), float64
        log10(Z/Z_sun) per bin, within ``logz_range``.
    """
    p = _probabilities(components, METALLICITY_COMPONENTS, DEFAULT_METALLICITY_WEIGHTS, "metallicity component")
    f = np.asarray(mass_fractions, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] < 1:
        raise ValueError(f"mass_fractions must have shape (n, n_bins), got {f.shape}")
    total = f.sum(axis=1, keepdims=True)
    if not np.all(np.isfinite(f)) or np.any(f < 0) or np.any(total <= 0):
        raise ValueError("mass_fractions must be finite, >= 0 and have positive row sums")
    lo, hi = (float(v) for v in logz_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"logz_range must be finite with low < high, got {logz_range}")
    if not (np.isfinite(scatter_dex) and scatter_dex >= 0):
        raise ValueError(f"scatter_dex must be >= 0, got {scatter_dex}")
    n, n_bins = f.shape
    which = rng.choice(len(METALLICITY_COMPONENTS), size=n, p=p)
    logz = np.empty((n, n_bins))

    rows = np.flatnonzero(which == 0)  # closed box
    older = np.cumsum(f[rows, ::-1], axis=1)[:, ::-1] / total[rows]  # mass in bins >= i
    c = np.clip(older - 0.5 * f[rows] / total[rows], 0.0, 1.0)
    z_i = rng.uniform(lo, 0.5 * (lo + hi), rows.size)[:, None]
    z_f = z_i + rng.random((rows.size, 1)) * (hi - z_i)
    curvature = _loguniform(rng, 0.25, 3.0, (rows.size, 1))
    logz[rows] = z_i + (z_f - z_i) * c**curvature

    rows = np.flatnonzero(which == 1)  # flat
    logz[rows] = rng.uniform(lo, hi, (rows.size, 1))

    rows = np.flatnonzero(which == 2)  # smooth random walk
    drift = rng.uniform(-0.1, 0.1, (rows.size, 1))
    steps = drift + 0.1 * rng.standard_normal((rows.size, n_bins))
    steps[:, -1] = 0.0  # oldest bin = start
    walk = rng.uniform(lo, hi, (rows.size, 1)) + np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
    if n_bins > 2:
        padded = np.concatenate([walk[:, :1], walk, walk[:, -1:]], axis=1)
        walk = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:]
    logz[rows] = walk

    if scatter_dex > 0:
        logz += scatter_dex * rng.standard_normal((n, n_bins))
    return np.clip(logz, lo, hi)


def two_phase_metallicity(
    rng: np.random.Generator, n: int, young_bins: np.ndarray, logz_range: tuple[float, float], scatter_dex: float = 0.1
) -> np.ndarray:
    """Metallicity histories of ``old_plus_young`` draws, log10(Z/Z_sun) per bin, (n, n_bins):
    the old bins at one value uniform in [-1, min(0.5, hi)], the young bins (``young_bins``,
    boolean per bin) at that value minus an offset uniform in [-0.3, 1] dex, so that young stars
    range from slightly richer to 1 dex poorer than their host (gas diluted by metal-poor
    inflow); then ``scatter_dex`` Gaussian scatter per bin, clipped to ``logz_range``."""
    lo, hi = (float(v) for v in logz_range)
    young_bins = np.asarray(young_bins, bool)
    old = rng.uniform(max(lo, -1.0), min(0.5, hi), (n, 1))
    offset = rng.uniform(-0.3, 1.0, (n, 1))
    logz = np.where(young_bins[None, :], old - offset, old)
    if scatter_dex > 0:
        logz = logz + scatter_dex * rng.standard_normal(logz.shape)
    return np.clip(logz, lo, hi)
