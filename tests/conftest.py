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


#: Enough spectra, S/N and epochs for the fixture model to learn ages (Spearman ~0.8 with the
#: truth on its test split; issue 12: a 600-spectrum, 2-epoch model had learned nothing, so the
#: prediction tests had no power). The analytic library's log Z is too faint for this network:
#: its log Z tests check bias and calibration, not ranking.
SMALL_TRAINSET = {"n_spectra": 3000, "chunk_size": 500, "seed": 5, "snr": [20.0, 150.0]}
TINY_TRAINING = {"max_epochs": 15, "batch_size": 32, "learning_rate": 3e-3, "patience": 15}


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


TINY_MODEL = dict(stem_channels=8, channels=(8, 12, 16, 16), attention_dim=16, attention_heads=2,
                  photometry_dim=16, latent_dim=32)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, small_trainset) -> Path:
    """model.pt of a tiny network trained on small_trainset (about a minute on 2 cores)."""
    from sfh_pipeline.model import ModelConfig
    from sfh_pipeline.training import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    train(small_trainset, out, ModelConfig(**TINY_MODEL), TrainConfig(**TINY_TRAINING), model_name="tiny")
    return out / "model.pt"
