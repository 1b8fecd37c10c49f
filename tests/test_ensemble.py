"""Deep ensembles: the combination rules on answers with known numbers, their calibration on
simulated members with known errors, and the ensemble file of the fixture's tiny members
through the predictor, the evaluation and the command line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import zarr

from sfh_pipeline import ensemble, load_predictor
from sfh_pipeline.ensemble import (
    SUMMARY_SOURCES,
    check_members_agree,
    combined_answer,
    fit_calibration,
    fit_light_per_mass,
    summaries_from_histories,
)
from sfh_pipeline.model import ENSEMBLE_FORMAT, SUMMARY_KEYS
from sfh_pipeline.predict import EnsemblePredictor, Predictor
from sfh_pipeline.products import sha256_of

BIN_AGE = np.array([5e7, 5e8, 5e9])


def answer(n=1, *, sfh, logz, values, errors, centre=None, h68=None, h95=None, ood=None):
    """A member's answer (Predictor.answer) with the given numbers, broadcast to n spectra: the
    same summary value and error for all four summaries unless dicts are given."""
    sfh, logz = np.broadcast_to(sfh, (n, len(sfh))).astype(float), np.broadcast_to(logz, (n, len(logz))).astype(float)
    out = {"sfh": sfh, "logzsol": logz, "ood": np.full(n, np.nan if ood is None else ood)}
    for key in SUMMARY_KEYS:
        out[key] = np.full(n, values[key] if isinstance(values, dict) else values, dtype=float)
        out[f"{key}_err"] = np.full(n, errors[key] if isinstance(errors, dict) else errors, dtype=float)
    targets = 2 * sfh.shape[1] + 2
    default_centre = np.concatenate([sfh, logz, np.full((n, 2), 9.0)], axis=1)
    out["posterior_centre"] = default_centre if centre is None else np.broadcast_to(centre, (n, targets)).copy()
    out["posterior_halfwidth_68"] = np.broadcast_to(0.1 if h68 is None else h68, (n, targets)).astype(float)
    out["posterior_halfwidth_95"] = np.broadcast_to(0.2 if h95 is None else h95, (n, targets)).astype(float)
    return out


# ----------------------------------------------------------------------------- the combination rules


def test_two_members_combine_as_an_equal_mixture():
    """Hand-computed: the mean SFH, log Z weighted by each member's mass in the bin, the mean
    summary with the spread as epistemic term, errors in quadrature, the mean OOD score, and
    the posterior targets' mixture half-widths."""
    a = answer(
        sfh=[0.6, 0.4, 0.0], logz=[0.0, -1.0, -2.0], values=9.0, errors=0.1, ood=0.5, h68=0.1,
        centre=[0.6, 0.4, 0.0, 0.0, -1.0, -2.0, 9.0, 8.0],
    )  # fmt: skip
    b = answer(
        sfh=[0.2, 0.4, 0.4], logz=[-0.5, 0.0, 0.3], values=9.2, errors=0.3, ood=1.5, h68=0.1,
        centre=[0.2, 0.4, 0.4, -0.5, 0.0, 0.3, 9.4, 8.0],
    )  # fmt: skip
    out = combined_answer([a, b], None, BIN_AGE)
    np.testing.assert_allclose(out["sfh"][0], [0.4, 0.4, 0.2])
    np.testing.assert_allclose(out["logzsol"][0], [-0.125, -0.5, 0.3])  # (0.6*0 + 0.2*-0.5) / 0.8, ...
    for key in SUMMARY_KEYS:
        assert out[key][0] == pytest.approx(9.1)
        assert out[f"{key}_epistemic"][0] == pytest.approx(0.1)
        assert out[f"{key}_err"][0] == pytest.approx(np.sqrt((0.1**2 + 0.3**2) / 2 + 0.1**2))
    assert out["ood"][0] == pytest.approx(1.0)
    # T50: centre 9.2, half-width sqrt(0.1^2 + 0.2^2); T90: no spread, half-width 0.1
    assert out["posterior_centre"][0, 6] == pytest.approx(9.2)
    assert out["posterior_halfwidth_68"][0, 6] == pytest.approx(np.hypot(0.1, 0.2))
    assert out["posterior_halfwidth_68"][0, 7] == pytest.approx(0.1)
    # log Z of the oldest bin: only member b formed stars there, so only its value counts
    assert out["posterior_halfwidth_68"][0, 5] == pytest.approx(0.1)
    # with a calibration: its source and scales
    calibration = {
        "summaries": {key: {"source": "averaged_histories", "error_scale": 2.0} for key in SUMMARY_KEYS},
        "posterior_scale": {"68": [3.0] * 8, "95": [1.0] * 8},
        "light_per_mass": {"log10_per_bin": [0.0, 0.0, 0.0], "logz_slope": 0.0},
    }
    scaled = combined_answer([a, b], calibration, BIN_AGE)
    log_age = np.log10(BIN_AGE)
    assert scaled["mw_age"][0] == pytest.approx(0.4 * log_age[0] + 0.4 * log_age[1] + 0.2 * log_age[2])
    # equal light per mass: light-weighted = mass-weighted
    assert scaled["lw_age"][0] == pytest.approx(scaled["mw_age"][0])
    members_mw = [0.6 * log_age[0] + 0.4 * log_age[1], 0.2 * log_age[0] + 0.4 * log_age[1] + 0.4 * log_age[2]]
    assert scaled["mw_age_epistemic"][0] == pytest.approx(np.std(members_mw))
    assert scaled["mw_age_err"][0] == pytest.approx(2.0 * np.sqrt(0.05 + np.var(members_mw)))
    assert scaled["posterior_halfwidth_68"][0, 6] == pytest.approx(3.0 * np.hypot(0.1, 0.2))


def test_identical_members_are_the_member():
    one = answer(4, sfh=[0.2, 0.3, 0.5], logz=[0.1, -0.2, -0.4], values=9.3, errors=0.12, ood=2.0)
    out = combined_answer([one, one, one], None, BIN_AGE)
    for key in ("sfh", "logzsol", "ood", "posterior_centre", "posterior_halfwidth_68", *SUMMARY_KEYS):
        np.testing.assert_allclose(out[key], one[key], err_msg=key)
    for key in SUMMARY_KEYS:
        np.testing.assert_allclose(out[f"{key}_err"], one[f"{key}_err"])
        assert np.all(out[f"{key}_epistemic"] == 0)


def test_ood_is_the_mean_of_the_members_that_have_a_reference():
    a = answer(3, sfh=[1, 0, 0], logz=[0, 0, 0], values=9, errors=0.1)
    b = answer(3, sfh=[1, 0, 0], logz=[0, 0, 0], values=9, errors=0.1)
    a["ood"], b["ood"] = np.array([0.5, np.nan, np.nan]), np.array([1.5, 4.0, np.nan])
    np.testing.assert_allclose(combined_answer([a, b], None, BIN_AGE)["ood"], [1.0, 4.0, np.nan])


def test_members_of_other_training_sets_are_named_and_refused():
    base = {
        "generator_digest": "abc",
        "wavelength_aa": [4800.0, 4801.25],
        "filters": ["f555w", "f814w"],
        "age_bin_edges_yr": [0.0, 1e8, 1.4e10],
        "norm_window_aa": [5400.0, 5600.0],
    }
    check_members_agree([base, dict(base)], ["a.pt", "b.pt"])
    with pytest.raises(ValueError, match=r"b\.pt cannot join an ensemble with a\.pt: age bins differ"):
        check_members_agree([base, {**base, "age_bin_edges_yr": [0.0, 2e8, 1.4e10]}], ["a.pt", "b.pt"])
    with pytest.raises(ValueError, match=r"c\.pt .*training set \(generator digest\), filters differ"):
        check_members_agree([base, base, {**base, "generator_digest": "x", "filters": ["f555w"]}], ["a", "b", "c.pt"])
    with pytest.raises(ValueError, match="at least 2 members"):
        check_members_agree([base], ["a.pt"])


# ----------------------------------------------------------------------------- the calibration


def test_the_light_table_of_known_light_per_mass_is_recovered():
    """Light-weighted truths made with a known table (young bins brighter, metal-rich stars
    fainter per mass): the fit finds it again."""
    rng = np.random.default_rng(4)
    ages = np.geomspace(3e6, 1.2e10, 8)
    known = {"log10_per_bin": -0.9 * (np.log10(ages) - 8.5), "logz_slope": -0.3}
    known["log10_per_bin"] -= known["log10_per_bin"].mean()
    sfh = rng.dirichlet(np.full(8, 0.4), 3000)
    logz = rng.uniform(-1.5, 0.3, (3000, 8))
    truth = summaries_from_histories(sfh, logz, ages, known)
    fitted = fit_light_per_mass(sfh, logz, truth["lw_age"], truth["lw_logz"], ages)
    np.testing.assert_allclose(fitted["log10_per_bin"], known["log10_per_bin"], atol=1e-3)
    assert fitted["logz_slope"] == pytest.approx(-0.3, abs=1e-3)
    assert fitted["accuracy"]["lw_age"]["scatter_dex"] < 1e-4


def simulated_members(rng, n, *, common=0.2, member=0.1, stated=0.1, histories_exact=False):
    """Three members' answers to n spectra and their truths. Each member's summary = truth + a
    common error (sd ``common``, shared by all members: what training cannot tell) + its own
    error (sd ``member``: the seed's); their heads state ``stated``. With ``histories_exact`` the
    members' SFHs and log Z are the true ones up to 0.2 % noise, else unrelated to the truth."""
    ages = np.geomspace(3e6, 1.2e10, 6)
    light = {"log10_per_bin": -0.8 * (np.log10(ages) - 8.5), "logz_slope": 0.0}
    sfh = rng.dirichlet(np.full(6, 0.5), n)
    logz = rng.uniform(-1.0, 0.2, (n, 6))
    formation = np.sort(rng.uniform(7, 10, (n, 2)), axis=1)[:, ::-1]
    truths = {"true_sfh": sfh, "true_logzsol": logz, "true_formation": formation}
    truths.update({f"true_{k}": v for k, v in summaries_from_histories(sfh, logz, ages, light).items()})
    shared = {key: rng.normal(0, common, n) for key in SUMMARY_KEYS}
    answers = []
    for _ in range(3):
        if histories_exact:
            own_sfh = sfh * (1 + 0.002 * rng.standard_normal(sfh.shape))
            own_sfh /= own_sfh.sum(1, keepdims=True)
            own_logz = logz + 0.002 * rng.standard_normal(logz.shape)
        else:
            own_sfh, own_logz = rng.dirichlet(np.full(6, 0.5), n), rng.uniform(-1.0, 0.2, (n, 6))
        out = {"sfh": own_sfh, "logzsol": own_logz, "ood": rng.uniform(0, 1, n)}
        for key in SUMMARY_KEYS:
            out[key] = truths[f"true_{key}"] + shared[key] + rng.normal(0, member, n)
            out[f"{key}_err"] = np.full(n, stated)
        centre = np.concatenate([own_sfh, own_logz, formation + rng.normal(0, 0.3, (n, 2))], axis=1)
        out["posterior_centre"] = centre
        out["posterior_halfwidth_68"] = np.full(centre.shape, 0.05)
        out["posterior_halfwidth_95"] = np.full(centre.shape, 0.1)
        answers.append(out)
    return answers, truths, ages


def test_calibrated_errors_cover_68_percent_of_fresh_draws():
    """Members whose heads state 0.1 dex where the truth of their mean is off by
    sqrt(0.2² + 0.1²/3) dex: the calibration fitted on one draw makes the errors of another
    cover 68.3 % (and the posterior targets 68 % and 95 %); averaging three members removes
    two thirds of the members' own variance (rms of the mean 0.208 dex against 0.224 for
    one); the summaries come from the averaged summaries (the histories here are noise)."""
    rng = np.random.default_rng(7)
    validation, truths, ages = simulated_members(rng, 20000)
    calibration = fit_calibration(validation, truths, ages)
    test, test_truths, _ = simulated_members(rng, 20000)
    out = combined_answer(test, calibration, ages)
    for key in SUMMARY_KEYS:
        entry = calibration["summaries"][key]
        assert entry["source"] == "averaged_summaries", (key, entry)
        assert set(entry["candidates"]) == set(SUMMARY_SOURCES)
        delta = out[key] - test_truths[f"true_{key}"]
        assert np.mean(np.abs(delta) <= out[f"{key}_err"]) == pytest.approx(0.6827, abs=0.01), key
        assert np.sqrt(np.mean(delta**2)) == pytest.approx(np.sqrt(0.2**2 + 0.1**2 / 3), rel=0.02), key
        assert np.median(out[f"{key}_epistemic"]) == pytest.approx(0.1 * np.sqrt(2 / 3), rel=0.25), key
        # the mixture's errors alone (before the scale) cover too little: the heads state too little
        assert entry["candidates"]["averaged_summaries"]["coverage_68_unscaled"] < 0.5
    values = np.concatenate([test_truths["true_sfh"], test_truths["true_logzsol"], test_truths["true_formation"]], 1)
    for level, share in (("68", 0.6827), ("95", 0.9545)):
        inside = np.abs(out["posterior_centre"][:, -2:] - values[:, -2:]) <= out[f"posterior_halfwidth_{level}"][:, -2:]
        np.testing.assert_allclose(inside.mean(0), share, atol=0.012)
    assert calibration["n_validation"] == 20000
    assert calibration["ood_above_1"] == 0.0  # every member's score is below 1 here


def test_histories_are_kept_where_they_are_the_sharper_answer():
    """Members whose SFHs are the true ones but whose summary heads are 0.2 dex off: the summaries
    recomputed from the averaged histories (mass weights exactly, light weights through the
    fitted table) are far sharper, and chosen, for all four."""
    rng = np.random.default_rng(8)
    validation, truths, ages = simulated_members(rng, 4000, histories_exact=True)
    calibration = fit_calibration(validation, truths, ages)
    for key in SUMMARY_KEYS:
        entry = calibration["summaries"][key]
        assert entry["source"] == "averaged_histories", (key, entry)
        candidates = entry["candidates"]
        assert (
            candidates["averaged_histories"]["scatter_dex"]
            < 0.02
            < 0.15
            < candidates["averaged_summaries"]["scatter_dex"]
        )
    assert calibration["light_per_mass"]["accuracy"]["lw_age"]["scatter_dex"] < 0.01


# ----------------------------------------------------------------------------- the fixture ensemble


@pytest.fixture(scope="module")
def ensemble_predictor(tiny_ensemble) -> EnsemblePredictor:
    return load_predictor(tiny_ensemble, device="cpu")


@pytest.fixture(scope="module")
def member_predictors(tiny_members) -> list[Predictor]:
    return [load_predictor(path, device="cpu") for path in tiny_members]


@pytest.fixture(scope="module")
def held_out(small_trainset) -> dict[str, np.ndarray]:
    group = zarr.open_group(small_trainset, mode="r")
    rows = np.flatnonzero(np.asarray(group["split"][:]) == 2)
    names = ("flux", "error", "mask", "phot", "phot_error", "sfh", "logzsol", *SUMMARY_KEYS)
    return {name: np.asarray(group[name][:])[rows] for name in names}


def normalised(predictor, data):
    return predictor.predict_normalised(data["flux"], data["error"], data["mask"], data["phot"], data["phot_error"])


def unwidened(result, key):
    """An error as the calibration sees it: before the OOD widening."""
    return result[key] / np.where(np.isfinite(result["ood"]), np.maximum(result["ood"], 1.0), 1.0)


def test_the_ensemble_file_holds_its_members_their_hashes_and_the_calibration(
    tiny_ensemble, tiny_members, ensemble_predictor
):
    payload = torch.load(tiny_ensemble, weights_only=False)
    assert payload["format"] == ENSEMBLE_FORMAT and payload["name"] == "tiny-ensemble"
    assert [m["sha256"] for m in payload["members"]] == [sha256_of(p) for p in tiny_members]
    for member, path in zip(payload["members"], tiny_members):
        own = torch.load(path, weights_only=False)
        assert member["payload"]["sigma_scale"] == own["sigma_scale"]
        for name, tensor in own["state_dict"].items():
            assert torch.equal(member["payload"]["state_dict"][name], tensor), name
    calibration = payload["calibration"]
    assert calibration["n_validation"] == int(np.count_nonzero(np.asarray(zarr.open_group(
        payload["trainset"]["store"], mode="r")["split"][:]) == 1))  # fmt: skip
    assert all(calibration["summaries"][k]["source"] in SUMMARY_SOURCES for k in SUMMARY_KEYS)
    assert len(calibration["posterior_scale"]["68"]) == 2 * 16 + 2
    assert isinstance(ensemble_predictor, EnsemblePredictor) and ensemble_predictor.calibrated
    assert "3 members, calibrated" in repr(ensemble_predictor)
    assert ensemble_predictor.member_sha256 == [sha256_of(p) for p in tiny_members]
    # Predictor (one network) and load_model_file name an ensemble file for what it is
    with pytest.raises(ValueError, match="is an ensemble of 3 model files"):
        Predictor(tiny_ensemble)


def test_the_ensemble_answers_with_its_members_mean_spread_and_calibration(
    ensemble_predictor, member_predictors, held_out
):
    """Against each member's own predictor: the mean SFH, the summaries from the chosen source,
    the spread of the members' values as epistemic term, and errors = scale x (mean variance +
    spread²)^½ widened by the mean OOD score."""
    out = normalised(ensemble_predictor, held_out)
    members = [normalised(p, held_out) for p in member_predictors]
    np.testing.assert_allclose(out["sfh"], np.mean([m["sfh"] for m in members], 0), atol=1e-12)
    np.testing.assert_allclose(out["sfh"].sum(1), 1.0)
    np.testing.assert_allclose(out["ood"], np.mean([m["ood"] for m in members], 0), atol=1e-12)
    sfh_m = np.stack([m["sfh"] for m in members])
    logz = (sfh_m * np.stack([m["logzsol"] for m in members])).sum(0) / sfh_m.sum(0)
    np.testing.assert_allclose(out["logzsol"], logz, atol=1e-12)
    calibration = ensemble_predictor.calibration
    widen = np.maximum(out["ood"], 1.0)
    for key in SUMMARY_KEYS:
        entry = calibration["summaries"][key]
        if entry["source"] == "averaged_summaries":
            values = np.stack([m[key] for m in members])
            expected = values.mean(0)
        else:
            light = calibration["light_per_mass"]
            own = [
                summaries_from_histories(m["sfh"], m["logzsol"], member_predictors[0].bin_age_yr, light)
                for m in members
            ]
            values = np.stack([o[key] for o in own])
            expected = summaries_from_histories(out["sfh"], out["logzsol"], member_predictors[0].bin_age_yr, light)[key]
        np.testing.assert_allclose(out[key], expected, atol=1e-9, err_msg=key)
        np.testing.assert_allclose(out[f"{key}_epistemic"], values.std(0), atol=1e-9, err_msg=key)
        variance = np.mean([unwidened(m, f"{key}_err") ** 2 for m in members], 0)
        np.testing.assert_allclose(
            out[f"{key}_err"], entry["error_scale"] * np.sqrt(variance + values.std(0) ** 2) * widen, rtol=1e-9
        )
        assert np.all(out[f"{key}_epistemic"] > 0), key  # seeds differ: so do their answers


def test_an_ensemble_and_one_model_give_every_quantity_the_maps_take_from_the_network(
    ensemble_predictor, member_predictors, held_out
):
    """Each maps quantity with a result key (products.PRODUCTS; EPISTEMIC's once per summary)
    is in the answer of an ensemble and of a single model: infer leaves none of their tile-table
    columns NaN for want of it."""
    from sfh_pipeline.products import PRODUCTS

    for predictor in (ensemble_predictor, member_predictors[0]):
        out = normalised(predictor, held_out)
        for quantity in PRODUCTS:
            if quantity.result_key is None:
                continue
            if quantity.planes == "summaries":
                keys = {quantity.result_key.format(key) for key in SUMMARY_KEYS}
            else:
                keys = {quantity.result_key}
            assert keys <= set(out), (quantity.name, keys - set(out))


def test_the_ensemble_errors_cover_68_percent_of_validation_and_about_that_of_test_spectra(
    ensemble_predictor, small_trainset, held_out
):
    """The scale of each summary was fitted on the validation split: there the ensemble's errors
    (before the OOD widening) cover 68.27 % to within one spectrum; on the independent test split
    they cover what a single network's do (0.58-0.78 for this small set; measured 0.61-0.65)."""
    from sfh_pipeline.training import TrainsetReader, ensemble_answers_on_split

    answers, truths = ensemble_answers_on_split(ensemble_predictor, TrainsetReader(small_trainset), "validation")
    out = ensemble_predictor.answer(answers)
    n = len(truths["true_sfh"])
    for key in SUMMARY_KEYS:
        covered = np.mean(np.abs(out[key] - truths[f"true_{key}"]) <= out[f"{key}_err"])
        assert covered == pytest.approx(0.6827, abs=1.5 / n), key
    result = normalised(ensemble_predictor, held_out)
    for key in SUMMARY_KEYS:
        covered = np.mean(np.abs(result[key] - held_out[key]) <= result[f"{key}_err"])
        assert 0.58 <= covered <= 0.78, (key, covered)
    covered = np.abs(result["sfh"] - held_out["sfh"]) <= result["sfh_err"]
    assert 0.55 <= covered.mean() <= 0.85, covered.mean(0)


def test_a_list_of_member_files_is_the_uncalibrated_mixture(tiny_members, member_predictors, held_out, tiny_model):
    listed = load_predictor(tiny_members, device="cpu")
    assert isinstance(listed, EnsemblePredictor) and not listed.calibrated and "uncalibrated" in repr(listed)
    out = normalised(listed, held_out)
    members = [normalised(p, held_out) for p in member_predictors]
    for key in SUMMARY_KEYS:
        values = np.stack([m[key] for m in members])
        np.testing.assert_allclose(out[key], values.mean(0), atol=1e-12)
        variance = np.mean([unwidened(m, f"{key}_err") ** 2 for m in members], 0)
        np.testing.assert_allclose(unwidened(out, f"{key}_err"), np.sqrt(variance + values.var(0)), rtol=1e-9)
    # the same file twice is that file: no spread, its own errors
    twice = normalised(load_predictor([tiny_model, tiny_model], device="cpu"), held_out)
    for key in ("sfh", "logzsol", "sfh_err", "t50", "t50_err", *SUMMARY_KEYS, *(f"{k}_err" for k in SUMMARY_KEYS)):
        np.testing.assert_allclose(twice[key], members[0][key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert all(np.all(twice[f"{k}_epistemic"] == 0) and np.all(members[0][f"{k}_epistemic"] == 0) for k in SUMMARY_KEYS)
    with pytest.raises(ValueError, match="sha256 checks one file"):
        load_predictor(tiny_members, sha256="0" * 64)


def test_observed_spectra_are_prepared_and_refined_once_then_read_by_every_member(
    ensemble_predictor, member_predictors, small_trainset, monkeypatch
):
    """predict(): one velocity refinement (the first member's template) and one preparation for
    all members; the result is predict_normalised of the first member's preparation, with every
    key of a single model's result."""
    group = zarr.open_group(small_trainset, mode="r")
    rows = np.arange(0, 60, 6)
    flux, error = (np.asarray(group[k][:])[rows] for k in ("flux", "error"))
    z = 0.004
    wave = ensemble_predictor.wavelength_aa * (1 + z)
    calls = []
    for member in ensemble_predictor.members:
        original = member.refine_velocity
        monkeypatch.setattr(member, "refine_velocity", lambda *a, _o=original, **k: calls.append(1) or _o(*a, **k))
    result = ensemble_predictor.predict(wave, flux, error, z=z)
    assert len(calls) == 1
    single = member_predictors[0].predict(wave, flux, error, z=z)
    assert set(single) == set(result)
    np.testing.assert_array_equal(result["velocity_kms"], single["velocity_kms"])
    prepared = member_predictors[0].prepare(
        wave, flux, error, z=np.expm1(np.nan_to_num(single["velocity_kms"]) / 299792.458), coverage_slack_kms=500.0
    )
    again = ensemble_predictor.predict_prepared(prepared)
    ok = result["velocity_ok"]
    np.testing.assert_allclose(result["lw_age"][ok], again["lw_age"][ok], atol=1e-9)
    one = ensemble_predictor.predict(wave, flux[0], error[0], z=z)
    assert np.ndim(one["lw_age_epistemic"]) == 0 and one["sfh"].shape == (16,)


def test_a_model_of_the_catalog_is_found_by_name_and_always_verified(tiny_ensemble, tmp_path):
    import shutil

    import yaml

    models = tmp_path / "models"
    (models / "ens").mkdir(parents=True)
    shutil.copyfile(tiny_ensemble, models / "ens" / "model.pt")
    entry = {"path": "ens/model.pt", "sha256": sha256_of(tiny_ensemble), "card": "ens/README.md"}
    (models / "catalog.yaml").write_text(yaml.safe_dump({"ens": entry}))
    found = load_predictor("ens", device="cpu", catalog=models / "catalog.yaml")
    assert isinstance(found, EnsemblePredictor) and found.path == models / "ens" / "model.pt"
    with pytest.raises(
        ValueError, match=r"'other' is neither a model file nor a model of .*catalog\.yaml; it has \['ens'\]"
    ):
        load_predictor("other", catalog=models / "catalog.yaml")
    with open(models / "ens" / "model.pt", "ab") as handle:  # the file changed behind the catalog's back
        handle.write(b"\0")
    with pytest.raises(ValueError, match="has sha256"):
        load_predictor("ens", catalog=models / "catalog.yaml")


def test_the_project_catalog_names_the_reference_model():
    from sfh_pipeline.predict import CATALOG

    by_name = load_predictor("reference", device="cpu")
    assert by_name.path == CATALOG.parent / "reference" / "model.pt"
    assert np.all(
        by_name.predict_normalised(
            np.ones((1, by_name.wavelength_aa.size)), np.full((1, by_name.wavelength_aa.size), 0.02), None
        )["lw_age_epistemic"]
        == 0
    )


def test_members_of_another_training_set_or_twice_the_same_are_refused(tiny_members, small_trainset, tmp_path):
    from sfh_pipeline.training import combine_ensemble

    payload = torch.load(tiny_members[1], weights_only=False)
    other = dict(payload, trainset={**payload["trainset"], "generator_digest": "0" * 64})
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt was trained on another training set"):
        combine_ensemble([tiny_members[0], tmp_path / "other.pt"], small_trainset, tmp_path / "e.pt")
    # plain floats, as model files hold them (numpy scalars would be refused as objects)
    edited = dict(payload, trainset={**payload["trainset"], "age_bin_edges_yr": np.arange(17.0).tolist()})
    torch.save(edited, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=r"edited\.pt cannot join an ensemble with .*: age bins differ"):
        combine_ensemble([tiny_members[0], tmp_path / "edited.pt"], small_trainset, tmp_path / "e.pt")
    with pytest.raises(ValueError, match="is the same file as"):
        combine_ensemble([tiny_members[0], tiny_members[0]], small_trainset, tmp_path / "e.pt")
    assert not (tmp_path / "e.pt").exists()


def test_evaluation_of_the_ensemble_with_each_member_s_figures(
    tiny_ensemble, member_predictors, small_trainset, held_out, tmp_path
):
    """metrics.json of an ensemble file: the figures of a model's, the ensemble's own block, and
    each member's figures equal to those of its own predictor on the same test spectra."""
    from sfh_pipeline.evaluation import evaluate_model, summary_metrics

    metrics = evaluate_model(tiny_ensemble, small_trainset, tmp_path, device="cpu")
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert metrics["model"] == "tiny-ensemble" and metrics["n_test"] == len(held_out["flux"])
    for name in ("pred_vs_true.png", "sfh_bins.png", "age_metallicity.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    block = metrics["ensemble"]
    assert block["n_members"] == 3 and block["calibrated"]
    for i, predictor in enumerate(member_predictors):
        result = normalised(predictor, held_out)
        member = block["members"][i]
        assert member["name"] == predictor.name and member["sha256"] == sha256_of(predictor.path)
        for key in SUMMARY_KEYS:
            expected = summary_metrics(result[key], held_out[key], unwidened(result, f"{key}_err"))
            for figure, value in expected.items():
                assert member[key][figure] == pytest.approx(value, abs=1e-6), (i, key, figure)
    for key in SUMMARY_KEYS:
        assert 0.58 <= metrics[key]["coverage_68"] <= 0.78, (key, metrics[key])
        assert block[key]["median_epistemic_dex"] > 0
    posteriors = metrics["posteriors"]
    assert len(posteriors["sfh"]) == 16 and 0.55 <= posteriors["t50"]["coverage_68"] <= 0.8


def test_the_command_line_combines_as_the_function_does(tiny_members, tiny_ensemble, small_trainset, tmp_path):
    from sfh_pipeline.cli import main

    out = tmp_path / "cli" / "model.pt"
    args = ["combine-ensemble", "--members", *map(str, tiny_members), "--trainset", str(small_trainset)]
    assert main([*args, "--out", str(out)]) == 0
    written, fixture = (torch.load(p, weights_only=False) for p in (out, tiny_ensemble))
    assert written["name"] == "cli"  # the folder of --out
    assert written["calibration"] == fixture["calibration"]
    assert main([*args[:3], str(tmp_path / "absent.pt"), *args[3:], "--out", str(tmp_path / "x.pt")]) == 1
    assert ensemble.SUMMARY_KEYS == SUMMARY_KEYS


def test_the_contract_page_names_only_keys_of_the_ensemble_file_and_its_metrics(
    tiny_ensemble, small_trainset, tmp_path
):
    from sfh_pipeline.evaluation import evaluate_model

    from .support.workflow import REPO

    page = (REPO / "docs" / "contracts.md").read_text().split("## Ensembles\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)`", page)) - {"ensemble", "format", "model", "metrics", "json", "lw_age"}
    payload = torch.load(tiny_ensemble, weights_only=False)
    calibration = payload["calibration"]
    entry = calibration["summaries"]["lw_age"]
    metrics = evaluate_model(tiny_ensemble, small_trainset, tmp_path, device="cpu")
    present = set(payload) | set(payload["members"][0]) | set(payload["trainset"]) | set(calibration)
    present |= set(entry) | set(entry["candidates"]) | set(entry["candidates"]["averaged_summaries"])
    present |= set(calibration["light_per_mass"]) | set(metrics["ensemble"]) | set(metrics["ensemble"]["lw_age"])
    present |= set(metrics["ensemble"]["members"][0]) | {"test_loss_terms"}
    assert named <= present, named - present
    assert "test_loss_terms" not in metrics


def test_an_ensemble_ships_with_its_members_their_cards_and_figures(
    tiny_ensemble, tiny_members, small_trainset, tmp_path
):
    """ship-model of an ensemble file: the catalog entry lists each member's shipped file with the
    sha256 the ensemble records; the ensemble's card holds each member's figures (from each
    member's own evaluation when given) beside the ensemble's; the catalog name loads the
    ensemble; a member file that is not the one combined is refused."""
    import yaml

    from sfh_pipeline.evaluation import evaluate_model
    from sfh_pipeline.model_card import CHECK_SPECTRA, ship_model

    metrics = evaluate_model(tiny_ensemble, small_trainset, tmp_path / "ens", device="cpu")
    own = [evaluate_model(p, small_trainset, tmp_path / f"m{i}", device="cpu") for i, p in enumerate(tiny_members)]
    models = tmp_path / "models"
    with pytest.raises(ValueError, match="not the same training"):
        ship_model(tiny_ensemble, tmp_path / "ens" / "metrics.json", models, "x", members=tiny_members[::-1])
    from sfh_pipeline.cli import main

    shipping = ["ship-model", "--model", str(tiny_ensemble), "--metrics", str(tmp_path / "ens" / "metrics.json")]
    assert (
        main([*shipping, "--name", "x", "--models-dir", str(models), "--members", *map(str, tiny_members[::-1])]) == 1
    )
    assert not (models / "x").exists()
    entry = ship_model(
        tiny_ensemble,
        tmp_path / "ens" / "metrics.json",
        models,
        "tiny-ens",
        trainset=small_trainset,
        member_metrics=[tmp_path / f"m{i}" / "metrics.json" for i in range(3)],
    )
    assert yaml.safe_load((models / "catalog.yaml").read_text()) == {"tiny-ens": entry}
    names = [m["model"] for m in own]
    assert [m["sha256"] for m in entry["members"]] == [sha256_of(p) for p in tiny_members]
    assert [m["path"] for m in entry["members"]] == [f"tiny-ens/members/{n}/model.pt" for n in names]
    for member, figures, name in zip(entry["members"], own, names):
        assert sha256_of(models / member["path"]) == member["sha256"]
        card = (models / member["card"]).read_text()
        assert member["sha256"] in card and "A member of the ensemble `tiny-ens`" in card
        assert json.loads((models / f"tiny-ens/members/{name}/metrics.json").read_text()) == figures
        alone = load_predictor(models / member["path"], device="cpu", sha256=member["sha256"])
        assert alone.name == name
    card = (models / "tiny-ens" / "README.md").read_text()
    for name, figures in zip(names, own):
        row = " | ".join(f"{figures[k]['scatter_dex']:.3f} / {figures[k]['coverage_68']:.2f}" for k in SUMMARY_KEYS)
        assert f"| {name} | `{sha256_of(models / 'tiny-ens' / 'members' / name / 'model.pt')[:12]}` | {row} |" in card
    row = " | ".join(f"{metrics[k]['scatter_dex']:.3f} / {metrics[k]['coverage_68']:.2f}" for k in SUMMARY_KEYS)
    assert f"| **ensemble** | — | {row} |" in card
    calibration = torch.load(tiny_ensemble, weights_only=False)["calibration"]
    source = calibration["summaries"]["lw_age"]["source"].replace("_", " ")
    assert f"| LW log age | {source} | {calibration['summaries']['lw_age']['error_scale']:.3f} |" in card
    assert "an ensemble of 3 networks" in card
    # the stored answers are float32 ones, whatever this CPU picks by default
    shipped = load_predictor("tiny-ens", device="cpu", catalog=models / "catalog.yaml", precision="float32")
    with np.load(models / "tiny-ens" / CHECK_SPECTRA) as check:
        again = shipped.predict_normalised(*(check[k] for k in ("flux", "error", "mask", "phot", "phot_error")))
        np.testing.assert_allclose(again["lw_age"], check["pred_lw_age"], rtol=1e-9)


def test_the_cost_bench_times_the_ensemble_and_one_member_on_the_same_spectra(tiny_ensemble, small_trainset):
    import subprocess
    import sys

    from .support.workflow import REPO

    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ensemble_cost.py"), "--model", str(tiny_ensemble)]
        + ["--trainset", str(small_trainset), "--n", "64", "--repeats", "1", "--batch-size", "32"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["members"] == 3 and result["n_spectra"] == 64 and result["provenance"]["commit"]
    for path in ("network", "observed"):
        figures = result[path]
        ratio = figures["one_member_spectra_per_s"] / figures["ensemble_spectra_per_s"]
        assert figures["time_ratio"] == pytest.approx(ratio, rel=0.01), path
    assert result["network"]["time_ratio"] > 1.3  # three networks cost more than one


def test_an_ensemble_file_teaches_as_its_members_mixture(tiny_ensemble, tiny_members, small_trainset, tmp_path):
    """As a distillation teacher an ensemble file is its members' equal mixture, by the numpy
    rules the predictor combines answers with (mean SFH, mass-weighted log Z per bin, averaged
    summaries, the mixture's sigma); a short distillation from it lowers the distillation term."""
    from sfh_pipeline.model import LossWeights, ModelConfig, NetworkMixture, load_model_file
    from sfh_pipeline.training import TrainConfig, TrainsetReader, iterate_batches, load_teacher, train

    from .support.fixture_model import ONLY_TEACHER, TINY_MODEL

    reader = TrainsetReader(small_trainset)
    teacher = load_teacher(tiny_ensemble, reader, torch.device("cpu"))
    assert isinstance(teacher, NetworkMixture) and len(teacher.networks) == 3
    batch, _ = next(iter(iterate_batches(reader, "test", 64, 0, 0, train=False)))
    inputs = batch["spectrum"], batch["photometry"]
    with torch.no_grad():
        taught = {k: v.numpy().astype(float) for k, v in teacher(*inputs).items()}
        outs = [load_model_file(path)[0](*inputs) for path in tiny_members]
    answers = [
        {"sfh": torch.softmax(o["sfh_logits"], 1).numpy(), "logzsol": o["logz"].numpy().astype(float)} for o in outs
    ]
    _, sfh, logz = ensemble.mixture_histories(answers)
    means = np.stack([o["summary"].numpy() for o in outs])
    sigmas = np.stack([np.exp(o["summary_log_sigma"].numpy()) for o in outs])
    np.testing.assert_allclose(np.exp(taught["sfh_logits"]), sfh, atol=1e-6)
    np.testing.assert_allclose(taught["logz"], logz, atol=1e-5)
    np.testing.assert_allclose(taught["summary"], means.mean(0), atol=1e-5)
    mixture_sigma = np.sqrt((sigmas**2).mean(0) + means.std(0) ** 2)
    np.testing.assert_allclose(np.exp(taught["summary_log_sigma"]), mixture_sigma, rtol=1e-5)
    assert (mixture_sigma > sigmas.min(0)).all()  # the members' spread widens the teacher's sigma

    only_teacher = LossWeights(**ONLY_TEACHER)
    settings = dict(max_epochs=3, batch_size=32, learning_rate=3e-3, seed=4, redraw_noise=False)
    student = train(
        small_trainset,
        tmp_path / "student",
        ModelConfig(**{**TINY_MODEL, "channels": (8, 16)}),
        TrainConfig(**settings, teacher=str(tiny_ensemble)),
        only_teacher,
    )
    distillation = [h["train_distillation"] for h in student["history"]]
    assert distillation[-1] < 0.6 * distillation[0]
