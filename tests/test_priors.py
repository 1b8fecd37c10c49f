"""The SFH and metallicity-history prior of the synthetic training set (sfh_pipeline.priors)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sfh_pipeline import priors

EDGES = np.array([0, 5e6, 1e7, 2e7, 4e7, 7e7, 1e8, 2e8, 4e8, 7e8, 1e9, 2e9, 3.5e9, 5e9, 8e9, 1.1e10, 1.4e10])
WIDTHS = np.diff(EDGES)
MID = 0.5 * (EDGES[1:] + EDGES[:-1])
N = 2000
LOGZ_RANGE = (-2.3, 0.7)


def draw(family: str, seed: int = 1, n: int = N, **kwargs) -> priors.SFHDraw:
    return priors.sample_sfh(np.random.default_rng(seed), EDGES, n, {family: 1.0}, **kwargs)


def mw_log_age(fractions: np.ndarray) -> np.ndarray:
    """Mass-weighted log10(age/yr), bin ages at the bin midpoints."""
    return fractions @ np.log10(MID)


@pytest.fixture(scope="module")
def draws() -> dict[str, priors.SFHDraw]:
    return {family: draw(family) for family in priors.SFH_FAMILIES}


# ------------------------------------------------------------------ generic properties


@pytest.mark.parametrize("family", priors.SFH_FAMILIES)
def test_every_family_gives_valid_labels(draws, family):
    d = draws[family]
    f = d.mass_fractions
    assert f.shape == (N, EDGES.size - 1) and f.dtype == np.float64
    assert np.all(np.isfinite(f)) and np.all(f >= 0)
    np.testing.assert_allclose(f.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert d.family.dtype == np.int16 and d.family.shape == (N,)
    assert np.all(d.family == priors.SFH_FAMILIES.index(family))
    assert np.all(d.family_names == family)
    assert np.all(np.isfinite(d.formation_lookback_yr))
    assert np.all((d.formation_lookback_yr >= 1e9) & (d.formation_lookback_yr <= 1.38e10))
    # No mass older than the formation time (bins entirely older than t_form are empty).
    older = EDGES[:-1][None, :] >= d.formation_lookback_yr[:, None]
    assert np.all(f[older] == 0)


@pytest.mark.parametrize("family", priors.SFH_FAMILIES)
def test_every_family_is_deterministic(draws, family):
    again = draw(family, seed=1)
    other = draw(family, seed=2)
    for field in ("mass_fractions", "family", "formation_lookback_yr", "quench_lookback_yr"):
        np.testing.assert_array_equal(getattr(again, field), getattr(draws[family], field))
    assert not np.array_equal(other.mass_fractions, draws[family].mass_fractions)


def test_default_mixture_uses_all_families_and_covers_ages():
    d = priors.sample_sfh(np.random.default_rng(7), EDGES, 5000)
    counts = np.bincount(d.family, minlength=len(priors.SFH_FAMILIES))
    expected = np.array([priors.DEFAULT_FAMILY_WEIGHTS[f] for f in priors.SFH_FAMILIES])
    expected = 5000 * expected / expected.sum()
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected))
    assert counts[priors.SFH_FAMILIES.index("old_plus_young")] == 0  # only where a config names it
    age = d.mass_fractions @ MID
    assert age.min() < 1e9 and age.max() > 8e9
    np.testing.assert_allclose(d.mass_fractions.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.isnan(d.quench_lookback_yr[d.family != priors.SFH_FAMILIES.index("quenched")]).all()


def test_mixture_is_deterministic_and_weights_partial_dicts():
    a = priors.sample_sfh(np.random.default_rng(3), EDGES, 500, {"continuity": 1, "quenched": 3})
    b = priors.sample_sfh(np.random.default_rng(3), EDGES, 500, {"continuity": 1, "quenched": 3})
    np.testing.assert_array_equal(a.mass_fractions, b.mass_fractions)
    np.testing.assert_array_equal(a.family, b.family)
    assert set(np.unique(a.family_names)) == {"continuity", "quenched"}
    assert 0.65 < np.mean(a.family_names == "quenched") < 0.85


def test_zero_draws_and_universe_age():
    empty = priors.sample_sfh(np.random.default_rng(0), EDGES, 0)
    assert empty.mass_fractions.shape == (0, 16) and empty.family.shape == (0,)
    # A younger universe: nothing older than 6 Gyr, for every family.
    d = priors.sample_sfh(
        np.random.default_rng(0), EDGES, 3000, {f: 1 for f in priors.SFH_FAMILIES}, universe_age_yr=6e9
    )
    assert np.all(d.mass_fractions[:, EDGES[:-1] >= 6e9] == 0)
    assert np.all(d.formation_lookback_yr <= 6e9)


# ------------------------------------------------------------------ bin_mass_fractions


def test_bin_mass_fractions_constant_sfr_gives_bin_widths():
    grid = np.geomspace(1e5, 1.4e10, 700)
    grid = np.concatenate([[0.0], grid])  # edges deliberately not on the grid
    f = priors.bin_mass_fractions(np.full((3, grid.size), 2.5), grid, EDGES)
    assert f.shape == (3, 16)
    np.testing.assert_allclose(f, np.broadcast_to(WIDTHS / WIDTHS.sum(), f.shape), rtol=0, atol=1e-10)
    one = priors.bin_mass_fractions(np.ones(grid.size), grid, EDGES)  # 1-D input
    np.testing.assert_allclose(one, WIDTHS / WIDTHS.sum(), rtol=0, atol=1e-10)


def test_bin_mass_fractions_sfr_inside_one_bin():
    grid = np.union1d(np.linspace(0, 1.4e10, 3001), EDGES)
    sfr = np.where((grid > 2e9) & (grid < 3.5e9), 1.0 + grid / 1e9, 0.0)
    f = priors.bin_mass_fractions(sfr[None, :], grid, EDGES)
    expected = np.zeros(16)
    expected[11] = 1.0
    np.testing.assert_allclose(f[0], expected, rtol=0, atol=1e-15)


def test_bin_mass_fractions_linear_sfr_is_exact():
    a, b = 3.0, -1.5e-10  # SFR = a + b t, positive on [0, 1.4e10]
    grid = np.geomspace(1e4, 1.4e10, 50)  # coarse, edges not on it
    grid = np.concatenate([[0.0], grid])
    f = priors.bin_mass_fractions(a + b * grid, grid, EDGES)
    lo, hi = EDGES[:-1], EDGES[1:]
    exact = a * (hi - lo) + 0.5 * b * (hi**2 - lo**2)
    np.testing.assert_allclose(f, exact / exact.sum(), rtol=1e-12, atol=1e-14)


def test_bin_mass_fractions_validates_input():
    grid = np.linspace(0, 1.4e10, 100)
    with pytest.raises(ValueError, match="increasing"):
        priors.bin_mass_fractions(np.ones(100), grid, EDGES[::-1])
    with pytest.raises(ValueError, match="increasing"):
        priors.bin_mass_fractions(np.ones(100), grid[::-1], EDGES)
    with pytest.raises(ValueError, match="match"):
        priors.bin_mass_fractions(np.ones(99), grid, EDGES)
    with pytest.raises(ValueError, match=">= 0"):
        priors.bin_mass_fractions(-np.ones(100), grid, EDGES)
    with pytest.raises(ValueError, match="no mass"):
        priors.bin_mass_fractions(np.zeros(100), grid, EDGES)


# ------------------------------------------------------------------ physical trends


@pytest.mark.parametrize("family", ["delayed_tau", "exp_declining"])
def test_declining_families_are_old(draws, family):
    assert np.median(mw_log_age(draws[family].mass_fractions)) > 9.3


def test_rising_is_younger_than_declining(draws):
    rising = mw_log_age(draws["exp_rising"].mass_fractions)
    declining = mw_log_age(draws["exp_declining"].mass_fractions)
    assert rising.mean() < declining.mean() - 0.3
    # Rising SFHs peak now: the youngest bin has the highest SFR of all bins formed.
    sfr = draws["exp_rising"].mass_fractions / WIDTHS
    assert np.all(sfr[:, 0] >= sfr.max(axis=1) * (1 - 1e-9))


def test_constant_burst_has_recent_mass(draws):
    f = draws["constant_burst"].mass_fractions
    young = EDGES[1:] <= 1e9
    assert np.all(f[:, young].max(axis=1) >= 1e-3)
    # Bursts make the young SFR exceed the smooth (<= e-fold) trend: in most draws some
    # bin younger than 1 Gyr has an SFR above e times the SFR averaged over the history.
    sfr = f / WIDTHS
    mean_sfr = 1.0 / draws["constant_burst"].formation_lookback_yr
    assert np.mean(sfr[:, young].max(axis=1) > np.e * mean_sfr) > 0.5


def test_old_plus_young_has_nothing_between_its_host_and_its_young_part(draws):
    """The host forms no star after 2 Gyr (lookback) and the young part none before 500 Myr: the
    bins from 700 Myr to 2 Gyr are empty; the young mass fraction is log-uniform 1e-4-0.5 (its
    median 10**-2.35 = 0.0045), half the young parts one burst (one bin), half a constant SFR."""
    f = draws["old_plus_young"].mass_fractions
    between = (EDGES[:-1] >= 7e8) & (EDGES[1:] <= 2e9)
    assert between.sum() == 2 and np.all(f[:, between] == 0)
    young = f[:, EDGES[1:] <= 7e8].sum(axis=1)
    assert 1e-4 * 0.999 <= young.min() and young.max() <= 0.5 * 1.001
    assert 10**-2.55 < np.median(young) < 10**-2.15
    assert np.all(f[:, EDGES[:-1] >= 2e9].sum(axis=1) >= 0.5 - 1e-9)
    one_bin = (f[:, EDGES[1:] <= 7e8] > 0).sum(axis=1) == 1
    assert 0.45 < one_bin.mean() < 0.6  # bursts, and constant SFRs shorter than the first bin


def test_old_plus_young_draws_its_young_mass_fraction_between_the_given_bounds(draws):
    """Bounds (1e-2, 0.5): log-uniform, so the median is their geometric mean, 0.071; the rest of
    the draw (the host, which bins) is as with the default bounds of the same seed."""
    f = draw("old_plus_young", young_mass_fraction=(1e-2, 0.5)).mass_fractions
    young = f[:, EDGES[1:] <= 7e8].sum(axis=1)
    assert 1e-2 * 0.999 <= young.min() and young.max() <= 0.5 * 1.001
    assert 0.06 < np.median(young) < 0.085
    default = draws["old_plus_young"].mass_fractions
    old = EDGES[:-1] >= 2e9
    host = f[:, old] / f[:, old].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(host, default[:, old] / default[:, old].sum(axis=1, keepdims=True), rtol=1e-12)
    for bounds in [(0.0, 0.5), (0.5, 0.1), (1e-3, 1.0)]:
        with pytest.raises(ValueError, match="young_mass_fraction"):
            draw("old_plus_young", young_mass_fraction=bounds)


def test_two_phase_metallicity_puts_young_stars_around_or_below_their_host():
    young_bins = EDGES[1:] <= 1e9
    logz = priors.two_phase_metallicity(np.random.default_rng(3), 4000, young_bins, LOGZ_RANGE, scatter_dex=0.0)
    old, young = logz[:, ~young_bins], logz[:, young_bins]
    assert np.all(old == old[:, :1]) and np.all(young == young[:, :1])
    offset = old[:, 0] - young[:, 0]
    assert -0.3 <= offset.min() < -0.25 and 0.95 < offset.max() <= 1.0
    assert -1.0 <= old.min() and old.max() <= 0.5
    noisy = priors.two_phase_metallicity(np.random.default_rng(3), 4000, young_bins, LOGZ_RANGE, scatter_dex=0.1)
    assert 0.09 < np.std(noisy - logz) < 0.11 and noisy.min() >= LOGZ_RANGE[0]


def test_quenched_has_no_mass_after_quenching(draws):
    d = draws["quenched"]
    t_q = d.quench_lookback_yr
    assert np.all(np.isfinite(t_q)) and t_q.min() >= 1e7 and t_q.max() <= 5e9
    assert np.all(d.formation_lookback_yr >= t_q + 1e9 - 1.0)
    after = EDGES[1:][None, :] <= t_q[:, None]  # bins entirely younger than t_q
    residual = np.where(after, d.mass_fractions, 0.0).sum(axis=1)
    assert residual.max() < 1e-3
    assert np.mean(residual == 0) > 0.3  # about half are fully truncated
    # ... but the same smooth shapes without quenching do form mass there.
    assert np.median(mw_log_age(d.mass_fractions)) > np.median(mw_log_age(draws["exp_rising"].mass_fractions))


def test_continuity_log_sfr_ratios_are_student_t():
    d = draw("continuity", universe_age_yr=1.4e10)  # all bins fully inside the Universe
    log_sfr = np.log10(d.mass_fractions / WIDTHS)
    ratio = (log_sfr[:, :-1] - log_sfr[:, 1:]).ravel()
    assert abs(np.median(ratio)) < 0.02
    q25, q75 = np.quantile(ratio, [0.25, 0.75])
    expected_half_iqr = 0.3 * stats.t(2).ppf(0.75)  # 0.245 dex
    assert abs(0.5 * (q75 - q25) - expected_half_iqr) < 0.02
    # Heavy tails: a Gaussian with this IQR has P(|r| > 1.2) ~ 1e-6; Student-t(2) ~ 0.057.
    assert 0.04 < np.mean(np.abs(ratio) > 1.2) < 0.075
    assert np.abs(ratio).max() <= 5 + 1e-9


def sfr_fractions(mass_fractions):
    sfr = mass_fractions / np.diff(EDGES)
    return sfr / sfr.sum(axis=1, keepdims=True)


def test_dirichlet_mean_sfr_fraction_is_uniform(draws):
    fractions = sfr_fractions(draws["dirichlet"].mass_fractions)
    np.testing.assert_allclose(fractions.mean(axis=0), 1 / 16, rtol=0, atol=0.006)
    # Concentration: alpha=1 marginal variance (1/16)(15/16)/17; larger alpha is tighter.
    var = fractions.var(axis=0).mean()
    assert abs(var - (1 / 16) * (15 / 16) / 17) < 3e-4
    tight = sfr_fractions(draw("dirichlet", dirichlet_alpha=20.0).mass_fractions).var(axis=0).mean()
    assert tight < var / 10


# ------------------------------------------------------------------ metallicity


@pytest.fixture(scope="module")
def mixed_fractions() -> np.ndarray:
    return priors.sample_sfh(np.random.default_rng(11), EDGES, N).mass_fractions


def test_metallicity_shape_range_determinism(mixed_fractions):
    z = priors.sample_metallicity(np.random.default_rng(5), mixed_fractions, LOGZ_RANGE)
    assert z.shape == (N, 16) and z.dtype == np.float64
    assert np.all(np.isfinite(z)) and z.min() >= LOGZ_RANGE[0] and z.max() <= LOGZ_RANGE[1]
    again = priors.sample_metallicity(np.random.default_rng(5), mixed_fractions, LOGZ_RANGE)
    other = priors.sample_metallicity(np.random.default_rng(6), mixed_fractions, LOGZ_RANGE)
    np.testing.assert_array_equal(z, again)
    assert not np.array_equal(z, other)
    assert z.std() > 0.4  # spans the library, not a single value


def test_closed_box_is_monotonic_towards_young_bins(mixed_fractions):
    z = priors.sample_metallicity(
        np.random.default_rng(5), mixed_fractions, LOGZ_RANGE, scatter_dex=0.0, components={"closed_box": 1}
    )
    assert np.all(z[:, :-1] >= z[:, 1:])  # index 0 = youngest
    assert np.mean(z[:, 0] - z[:, -1] > 0.1) > 0.8
    # Enrichment starts in the low half of the range (visible where the oldest bin is empty).
    empty_oldest = mixed_fractions[:, -1] == 0
    assert empty_oldest.sum() > 100
    assert np.all(z[empty_oldest, -1] <= 0.5 * sum(LOGZ_RANGE) + 1e-12)


def test_closed_box_follows_the_mass_assembly():
    # Mass only in the two oldest bins: all younger (empty) bins already have the final Z.
    f = np.zeros((200, 16))
    f[:, -2:] = 0.5
    z = priors.sample_metallicity(
        np.random.default_rng(0), f, LOGZ_RANGE, scatter_dex=0.0, components={"closed_box": 1}
    )
    np.testing.assert_allclose(z[:, :-2], z[:, :1] * np.ones((1, 14)), rtol=0, atol=1e-12)


def test_flat_and_walk_components(mixed_fractions):
    flat = priors.sample_metallicity(
        np.random.default_rng(1), mixed_fractions, LOGZ_RANGE, scatter_dex=0.0, components={"flat": 1}
    )
    np.testing.assert_array_equal(flat, flat[:, :1] * np.ones((1, 16)))
    walk = priors.sample_metallicity(
        np.random.default_rng(1), mixed_fractions, LOGZ_RANGE, scatter_dex=0.0, components={"walk": 1}
    )
    assert np.mean(walk[:, 0] < walk[:, -1] - 0.1) > 0.2  # declining histories exist
    assert np.mean(walk[:, 0] > walk[:, -1] + 0.1) > 0.2  # and enriching ones
    assert np.abs(np.diff(walk, axis=1)).max() < 0.6  # smooth
    scattered = priors.sample_metallicity(
        np.random.default_rng(1), mixed_fractions, (-5.0, 5.0), scatter_dex=0.1, components={"flat": 1}
    )
    resid = scattered - scattered.mean(axis=1, keepdims=True)
    assert abs(resid.std() * np.sqrt(16 / 15) - 0.1) < 0.005


def test_metallicity_errors(mixed_fractions):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="bogus"):
        priors.sample_metallicity(rng, mixed_fractions, LOGZ_RANGE, components={"bogus": 1})
    with pytest.raises(ValueError, match="all zero"):
        priors.sample_metallicity(rng, mixed_fractions, LOGZ_RANGE, components={"flat": 0})
    with pytest.raises(ValueError, match="logz_range"):
        priors.sample_metallicity(rng, mixed_fractions, (0.5, -1.0))
    with pytest.raises(ValueError, match="mass_fractions"):
        priors.sample_metallicity(rng, -mixed_fractions, LOGZ_RANGE)


# ------------------------------------------------------------------ errors


def test_unknown_family_is_rejected_with_its_name_and_the_valid_ones():
    with pytest.raises(ValueError, match="delayed_tua") as err:
        priors.sample_sfh(np.random.default_rng(0), EDGES, 10, {"delayed_tua": 1.0})
    for family in priors.SFH_FAMILIES:
        assert family in str(err.value)


def test_bad_weights_and_edges_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="all zero"):
        priors.sample_sfh(rng, EDGES, 10, {"continuity": 0.0, "dirichlet": 0})
    with pytest.raises(ValueError, match=">= 0"):
        priors.sample_sfh(rng, EDGES, 10, {"continuity": -1.0})
    not_increasing = EDGES.copy()
    not_increasing[5] = not_increasing[4]
    with pytest.raises(ValueError, match="increasing"):
        priors.sample_sfh(rng, not_increasing, 10)
    with pytest.raises(ValueError, match="increasing"):
        priors.sample_sfh(rng, EDGES[::-1], 10)
    with pytest.raises(ValueError, match="start at 0"):
        priors.sample_sfh(rng, EDGES + 1e5, 10)
    with pytest.raises(ValueError, match="universe_age_yr"):
        priors.sample_sfh(rng, EDGES, 10, universe_age_yr=1e9)
    with pytest.raises(ValueError, match="dirichlet_alpha"):
        priors.sample_sfh(rng, EDGES, 10, dirichlet_alpha=0.0)


def test_formation_times_of_sfhs_with_known_t50_and_t90():
    """Star formation uniform in time inside bins: T50 and T90 are where the cumulative mass,
    linear in lookback time, crosses 50 % and 90 %."""
    from sfh_pipeline.priors import formation_times

    edges = np.array([0.0, 1e9, 2e9, 4e9])
    got = 10 ** formation_times([[0, 0, 1], [1, 0, 0], [0.2, 0.3, 0.5], [0, 0, 0]], edges)
    np.testing.assert_allclose(got[0], [3.0e9, 2.2e9])  # all in 2-4 Gyr
    np.testing.assert_allclose(got[1], [5e8, 1e8])  # all in the last Gyr
    np.testing.assert_allclose(got[2], [2e9, 5e8])  # formed before 0/1/2/4 Gyr: 1, 0.8, 0.5, 0
    assert np.isnan(got[3]).all()
    # crossings at ~0 lookback are floored at 1e5 yr
    assert formation_times([[1.0, 0, 0]], edges, fractions=(0.9999999,))[0, 0] == pytest.approx(5.0)
