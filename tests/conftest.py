"""Shared fixtures: a small finalized training set and a briefly trained model on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfh_pipeline import trainset as ts
from sfh_pipeline.filters import PHANGS_FILTERS
from sfh_pipeline.ssp import write_store

# the checks of tests/support (e.g. check_galaxy_products) report like a test's own asserts;
# registered before anything imports them
pytest.register_assert_rewrite("tests.support")

from .support.fixture_model import SMALL_TRAINSET, TINY_MODEL, TINY_TRAINING  # noqa: E402
from .support.ssp_fixtures import analytic_library  # noqa: E402


@pytest.fixture(scope="session")
def analytic_ssp_store(tmp_path_factory) -> Path:
    """The analytic SSP library of support/ssp_fixtures.py as a standard store."""
    return write_store(analytic_library(), tmp_path_factory.mktemp("ssp") / "analytic.zarr")


@pytest.fixture(scope="session")
def small_trainset(tmp_path_factory, analytic_ssp_store) -> Path:
    """A finalized 3000-spectrum training set (6 chunks) from the analytic library."""
    root = tmp_path_factory.mktemp("trainset")
    config = ts.resolve_config(SMALL_TRAINSET)
    store = root / "trainset.zarr"
    ts.init_store(store, config, analytic_ssp_store, PHANGS_FILTERS)
    markers = []
    for i in range(config["n_spectra"] // config["chunk_size"]):
        ts.write_chunk(store, i, analytic_ssp_store, root / f"{i:05d}.json")
        markers.append(root / f"{i:05d}.json")
    ts.finalize(store, markers, root / "trainset.json")
    return store


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, small_trainset) -> Path:
    """model.pt of a tiny network trained on small_trainset (about a minute on 2 cores)."""
    from sfh_pipeline.model import ModelConfig
    from sfh_pipeline.training import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    train(small_trainset, out, ModelConfig(**TINY_MODEL), TrainConfig(**TINY_TRAINING), model_name="tiny")
    return out / "model.pt"


@pytest.fixture(scope="session")
def tiny_members(tmp_path_factory, small_trainset, tiny_model) -> list[Path]:
    """Model files of three tiny networks trained alike on small_trainset but for their seed:
    tiny_model (seed 1) and seeds 2 and 3 (about a minute each on 2 cores), the members of the
    fixture ensemble."""
    from sfh_pipeline.model import ModelConfig
    from sfh_pipeline.training import TrainConfig, train

    members = [tiny_model]
    for seed in (2, 3):
        out = tmp_path_factory.mktemp(f"member{seed}")
        train(
            small_trainset,
            out,
            ModelConfig(**TINY_MODEL),
            TrainConfig(**{**TINY_TRAINING, "seed": seed}),
            model_name=f"tiny-{seed}",
        )
        members.append(out / "model.pt")
    return members


@pytest.fixture(scope="session")
def tiny_ensemble(tmp_path_factory, small_trainset, tiny_members) -> Path:
    """The ensemble file of tiny_members, calibrated on small_trainset's validation split."""
    from sfh_pipeline.training import combine_ensemble

    out = tmp_path_factory.mktemp("ensemble") / "model.pt"
    combine_ensemble(tiny_members, small_trainset, out, name="tiny-ensemble")
    return out
