"""Shared fixtures: a small finalized training set and a briefly trained model on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfh_pipeline import trainset as ts
from sfh_pipeline.filters import PHANGS_FILTERS
from sfh_pipeline.ssp import write_store

from .ssp_fixtures import analytic_library


@pytest.fixture(scope="session")
def analytic_ssp_store(tmp_path_factory) -> Path:
    """The analytic SSP library of ssp_fixtures as a standard store."""
    return write_store(analytic_library(), tmp_path_factory.mktemp("ssp") / "analytic.zarr")


@pytest.fixture(scope="session")
def small_trainset(tmp_path_factory, analytic_ssp_store) -> Path:
    """A finalized 600-spectrum training set (3 chunks) from the analytic library."""
    root = tmp_path_factory.mktemp("trainset")
    config = ts.resolve_config({"n_spectra": 600, "chunk_size": 200, "seed": 5})
    store = root / "trainset.zarr"
    ts.init_store(store, config, analytic_ssp_store, PHANGS_FILTERS)
    markers = []
    for i in range(3):
        ts.write_chunk(store, i, analytic_ssp_store, root / f"{i:05d}.json")
        markers.append(root / f"{i:05d}.json")
    ts.finalize(store, markers, root / "trainset.json")
    return store


TINY_MODEL = dict(stem_channels=8, channels=(8, 12, 16, 16), attention_dim=16, attention_heads=2,
                  photometry_dim=16, latent_dim=32)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, small_trainset) -> Path:
    """model.pt of a tiny network trained for two epochs on small_trainset (seconds on a CPU)."""
    from sfh_pipeline.model import ModelConfig
    from sfh_pipeline.training import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    train(small_trainset, out, ModelConfig(**TINY_MODEL), TrainConfig(max_epochs=2, batch_size=32), model_name="tiny")
    return out / "model.pt"
