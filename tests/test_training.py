"""The network and its training: invariants, resume after a kill, DDP on CPU (gloo), bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sfh_pipeline.model import ModelConfig, SFHNet, encode_photometry, encode_spectrum, load_model_file
from sfh_pipeline.training import (
    LearningRateSchedule,
    TrainConfig,
    TrainsetReader,
    checkpoint_best_state,
    export_checkpoint,
    iterate_batches,
    moving_average,
    shard_chunks,
    train,
)

from .support.fixture_model import ONLY_TEACHER, TINY_MODEL, TINY_TRAINING
from .support.hostile import TouchesAFile

#: The fixture model's validation loss after its last epoch against after its first.
LOSS_DROP = 0.9


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY_MODEL, **overrides})


@pytest.mark.parametrize("front_end", ["conv", "linear"])
def test_outputs_respect_invariants_even_for_masked_spectra_and_missing_bands(front_end):
    torch.manual_seed(0)
    net = SFHNet(tiny_config(n_wave=500, front_end=front_end)).eval()
    rng = np.random.default_rng(0)
    flux = rng.normal(1, 0.1, (4, 500))
    error = np.full((4, 500), 0.05)
    mask = np.zeros((4, 500), np.uint8)
    mask[1] = 1  # every pixel masked
    flux[2, :200] = np.nan  # NaNs are ignored like masked pixels
    spectrum = encode_spectrum(flux, error, mask)
    assert np.all(np.isfinite(spectrum)) and spectrum[1].sum() == 0
    present = np.ones((4, 8), bool)
    present[3] = False  # no band at all
    photometry = encode_photometry(rng.uniform(0.2, 2, (4, 8)), np.full((4, 8), 0.05), present)
    assert np.all(photometry[3] == 0)
    with torch.no_grad():
        out = net(torch.from_numpy(spectrum), torch.from_numpy(photometry))
    # a masked pixel is invisible: other flux values under the mask give the same outputs
    other = encode_spectrum(flux * 3.0 + 7.0, error, mask)
    with torch.no_grad():
        out_other = net(torch.from_numpy(other), torch.from_numpy(photometry))
    for key, value in out.items():
        torch.testing.assert_close(out_other[key][1], value[1], msg=key)
        assert not torch.allclose(out_other[key][0], value[0]), key  # an unmasked spectrum does change
    lo, hi = net.config.logz_range
    assert torch.all(out["logz"] >= lo) and torch.all(out["logz"] <= hi)
    for value in out.values():
        assert torch.all(torch.isfinite(value))


def test_continuum_division_removes_a_smooth_factor_and_keeps_lines_and_masks():
    n_wave = 800
    net = SFHNet(tiny_config(n_wave=n_wave, front_end="linear", continuum_divide_degree=6)).eval()
    x = np.linspace(-1, 1, n_wave)
    lines = 1 - 0.3 * np.exp(-0.5 * ((np.arange(n_wave) - np.array([[150], [420], [610]])) / 3.0) ** 2).sum(0)
    tilt = 1.0 + 0.4 * x - 0.2 * x**2 + 0.1 * x**3  # a calibration error of ±40 % across the window
    error = np.full((2, n_wave), 0.02)
    mask = np.zeros((2, n_wave), np.uint8)
    mask[:, 300:340] = 1  # an emission line under its mask
    flux = np.stack([lines, lines * tilt])
    flux[:, 300:340] = 50.0
    encoded = torch.from_numpy(encode_spectrum(flux, error, mask))
    with torch.no_grad():
        divided = net.divide_continuum(encoded).numpy()
        out = net(encoded, torch.zeros(2, 24))
    valid = mask[0] == 0
    # the lines survive, relative to a continuum that is not exactly 1 (the lines lower the mean)
    depth = divided[0, 0, 150] - np.median(divided[0, 0, valid])
    assert -0.32 < depth < -0.28
    # the smooth factor is gone: the two spectra look alike to the network, to the line depths' 1 %
    np.testing.assert_allclose(divided[1, 0], divided[0, 0], atol=0.01)
    np.testing.assert_allclose(divided[1, 1, valid] + np.log10(tilt[valid]), divided[0, 1, valid], atol=0.005)
    np.testing.assert_array_equal(divided[:, :2, ~valid], 0.0)
    for key, value in out.items():
        torch.testing.assert_close(value[1], value[0], atol=0.02, rtol=0.02, msg=key)


def test_unknown_front_end_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="front_end must be one of 'conv', 'linear', got 'transformer'"):
        SFHNet(tiny_config(front_end="transformer"))


#: The state_dict names each shipped front end gives its weights: committed model files hold
#: these, so a front end that renamed them could no longer read them.
FRONT_END_WEIGHTS = {
    "conv": ("stem.", "stages.", "project.", "encoder.", "pool_query", "pool."),
    "linear": ("spectral.",),
}


@pytest.mark.parametrize("front_end", sorted(FRONT_END_WEIGHTS))
def test_front_ends_name_their_weights_as_the_model_files_do(front_end):
    shared = ("photometry.", "fuse.", "sfh_head.", "logz_head.", "summary_head.", "quantile_head.")
    names = list(SFHNet(tiny_config(front_end=front_end)).state_dict())
    own = [name for name in names if not name.startswith(shared)]
    assert own and all(name.startswith(FRONT_END_WEIGHTS[front_end]) for name in own), own
    assert {prefix for prefix in FRONT_END_WEIGHTS[front_end] if any(n.startswith(prefix) for n in own)} == set(
        FRONT_END_WEIGHTS[front_end]
    )


def test_a_registered_front_end_is_built_by_its_name_and_reads_the_spectrum(monkeypatch):
    """A new front end is one decorated class: the network (and so training, which builds it
    through SFHNet) finds it by the name in the model settings; a name registered twice is refused."""
    from sfh_pipeline import model

    monkeypatch.setattr(model, "FRONT_ENDS", dict(model.FRONT_ENDS))

    @model.register_front_end("mean")
    class MeanFrontEnd(model.FrontEnd):
        """The mean of each input channel, projected to the embedding."""

        @staticmethod
        def build(net, config):
            net.mean_projection = torch.nn.Linear(3, config.attention_dim)

        @staticmethod
        def read(net, spectrum):
            return net.mean_projection(spectrum.mean(-1))

    net = SFHNet(tiny_config(n_wave=120, front_end="mean")).eval()
    assert "mean_projection.weight" in net.state_dict()
    spectrum = torch.from_numpy(encode_spectrum(np.ones((2, 120)), np.full((2, 120), 0.1), np.zeros((2, 120))))
    with torch.no_grad():
        out = net(spectrum, torch.zeros(2, 24))
    assert out["spectral_features"].shape == (2, net.config.attention_dim)
    torch.testing.assert_close(out["spectral_features"][0], out["spectral_features"][1])
    with pytest.raises(ValueError, match="'mean' is registered already"):
        model.register_front_end("mean")(MeanFrontEnd)


def test_spectrum_encoding_zeroes_every_kind_of_bad_pixel_and_keeps_the_good_ones():
    flux = np.array([[1.0, np.nan, np.inf, 2.0, 3.0, 4.0, 5.0, 0.5]], np.float32)
    error = np.array([[0.1, 0.1, 0.1, 0.0, -0.2, np.nan, np.inf, 1e-3]], np.float32)
    mask = np.array([[0, 0, 0, 0, 0, 0, 0, 1]], np.uint8)
    error.flags.writeable = False  # as read from zarr
    out = encode_spectrum(flux, error, mask)
    np.testing.assert_array_equal(out[0, 2], [1, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out[0, :2, 1:], 0.0)
    np.testing.assert_allclose(out[0, :, 0], [1.0, np.log10(0.1) + 1.5, 1.0], rtol=1e-6)
    single = encode_spectrum(flux[0], error[0], mask[0])  # one spectrum: (3, n_wave)
    np.testing.assert_array_equal(single, out[0])


def test_reader_batches_cover_the_split_once_and_shards_are_disjoint(small_trainset):
    reader = TrainsetReader(small_trainset)
    n_test = int((reader.split == 2).sum())
    seen = sum(len(raw["flux"]) for _, raw in iterate_batches(reader, "test", 50, 0, 0, train=False))
    assert seen == n_test
    a, b = shard_chunks(reader.n_chunks, 3, 1, 0, 2, True), shard_chunks(reader.n_chunks, 3, 1, 1, 2, True)
    assert not set(a) & set(b) and sorted(a + b) == list(range(reader.n_chunks))
    # DDP: both ranks see the same number of training batches
    counts = [sum(1 for _ in iterate_batches(reader, "train", 32, 1, 3, rank=r, world=2)) for r in (0, 1)]
    assert counts[0] == counts[1] > 0
    # band dropout leaves some batches with absent bands
    batch, _ = next(iterate_batches(reader, "train", 64, 0, 3))
    present = batch["photometry"].reshape(64, 8, 3)[..., 2]
    assert 0.4 < present.float().mean() < 0.9


def test_redrawn_noise_changes_each_epoch_and_only_in_training(small_trainset):
    """With redraw_noise a training spectrum comes with new noise every epoch (and the same noise
    when the epoch is read again, so that a resumed run sees the same batches); evaluation reads
    the stored spectra."""
    reader = TrainsetReader(small_trainset)
    config = TrainConfig(redraw_noise=True)

    def by_label(epoch, split="train", train=True, cfg=config):
        """Flux and S/N per sample (keyed by its SFH: an epoch may drop a few samples)."""
        batches = [raw for _, raw in iterate_batches(reader, split, 50, epoch, 3, train=train, config=cfg)]
        return {
            raw["sfh"][i].tobytes(): (raw["flux"][i], raw["snr"][i]) for raw in batches for i in range(len(raw["sfh"]))
        }

    def stack(samples, keys, item=0):
        return np.array([samples[k][item] for k in keys])

    stored, first, again, second = (
        by_label(1, cfg=TrainConfig(redraw_noise=False)),
        by_label(1),
        by_label(1),
        by_label(2),
    )
    keys = sorted(set(first) & set(second))
    assert len(keys) > 0.9 * len(first)
    np.testing.assert_array_equal(stack(first, keys), stack(again, keys))
    assert np.all(np.any(stack(first, keys) != stack(second, keys), axis=1))
    # S/N is drawn from the store's own prior (here 20-150), not kept
    snr = stack(first, keys, 1)
    assert snr.min() >= 20 and snr.max() <= 150
    assert np.corrcoef(np.log(snr), np.log(stack(stored, keys, 1)))[0, 1] < 0.5
    # the same spectrum under the noise: new and stored realisations differ by about the noise
    # (S/N >= 20: a few per cent rms), not by a different spectrum (tens of per cent)
    rms = np.sqrt(np.mean((stack(first, keys) - stack(stored, keys)) ** 2, axis=1))
    assert 0.005 < np.median(rms) < 0.1
    evaluated, plain = (
        by_label(1, "validation", False),
        by_label(1, "validation", False, TrainConfig(redraw_noise=False)),
    )
    assert evaluated.keys() == plain.keys()
    np.testing.assert_array_equal(stack(evaluated, plain), stack(plain, plain))


def run_train_cli(trainset, out, settings, env=None, launcher=None):
    cmd = (launcher or [sys.executable, "-m", "sfh_pipeline"]) + [
        "train",
        "--trainset",
        str(trainset),
        "--out",
        str(out),
        "--config",
        json.dumps(settings),
        "--name",
        "t",
    ]
    return cmd, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)


def finish(job, timeout=None):
    """Wait for a job of run_train_cli: its exit code and its stderr (read to the end and closed)."""
    _, stderr = job.communicate(timeout=timeout)
    return job.returncode, stderr


# 30 batches an epoch: the resume and DDP tests need epochs, not a model that learned
SETTINGS = {
    "architecture": TINY_MODEL,
    "training": {"max_epochs": 5, "batch_size": 16, "seed": 3, "patience": 10, "max_train_batches_per_epoch": 30},
}


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(small_trainset, tmp_path):
    straight = tmp_path / "straight"
    _, job = run_train_cli(small_trainset, straight, SETTINGS)
    code, stderr = finish(job)
    assert code == 0, stderr

    resumed = tmp_path / "resumed"
    cmd, job = run_train_cli(small_trainset, resumed, SETTINGS)
    checkpoint = resumed / "checkpoints" / "last.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(job.pid, signal.SIGKILL)
    finish(job)
    assert not (resumed / "model.pt").exists(), "the job finished before it was killed: nothing was tested"
    epoch_at_kill = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= epoch_at_kill < 5
    _, job = run_train_cli(small_trainset, resumed, SETTINGS)
    assert finish(job)[0] == 0
    a, b = torch.load(straight / "model.pt", weights_only=False), torch.load(resumed / "model.pt", weights_only=False)
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-5, atol=1e-6)
    assert [h["val_loss"] for h in a["history"]] == pytest.approx([h["val_loss"] for h in b["history"]], rel=1e-5)


@pytest.mark.slow
def test_ddp_on_cpu_with_gloo_and_two_processes(small_trainset, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun ships with torch"
    settings = {**SETTINGS, "training": {**SETTINGS["training"], "max_epochs": 2}}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _, job = run_train_cli(
        small_trainset,
        tmp_path,
        settings,
        env=env,
        launcher=[torchrun, "--standalone", "--nproc_per_node=2", "-m", "sfh_pipeline"],
    )
    code, stderr = finish(job, timeout=900)
    assert code == 0, stderr
    net, payload = load_model_file(tmp_path / "model.pt")
    assert payload["world_size"] == 2 and payload["device"] == "cpu"
    assert len(payload["history"]) == 2


def test_training_learns_and_writes_its_products(tiny_model):
    net, payload = load_model_file(tiny_model)
    history = payload["history"]
    assert len(history) == TINY_TRAINING["max_epochs"]
    assert history[-1]["val_loss"] < LOSS_DROP * history[0]["val_loss"], [h["val_loss"] for h in history]
    assert set(payload["sigma_scale"]) == {"lw_age", "mw_age", "lw_logz", "mw_logz"}
    folder = Path(tiny_model).parent
    for name in ("history.csv", "history.json", "learning_curve.png", "checkpoints/last.pt"):
        assert (folder / name).exists(), name


def test_checkpoint_of_another_training_run_is_not_resumed(small_trainset, tiny_model, tmp_path, caplog):
    shutil.copytree(Path(tiny_model).parent / "checkpoints", tmp_path / "checkpoints")
    finished = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert finished["epoch"] == TINY_TRAINING["max_epochs"]  # resuming it with max_epochs=1 would train nothing
    payload = train(
        small_trainset,
        tmp_path,
        tiny_config(),
        TrainConfig(max_epochs=1, batch_size=32, learning_rate=finished["train_config"]["learning_rate"] / 2),
    )
    assert payload["epochs_run"] == 1 and len(payload["history"]) == 1
    assert "another training run (train_config differ)" in caplog.text


def test_a_spent_time_budget_ends_training_and_a_larger_one_resumes_it(small_trainset, tmp_path):
    """``max_hours`` stops training after the epoch that spends it, with the best model so far
    written; raising it (or dropping it) continues that run instead of starting another, and the
    run then ends with the weights of a run never stopped."""
    settings = dict(max_epochs=3, batch_size=32, seed=5, patience=10, max_train_batches_per_epoch=20)
    straight = train(small_trainset, tmp_path / "straight", tiny_config(), TrainConfig(**settings))
    budgeted = train(small_trainset, tmp_path / "budget", tiny_config(), TrainConfig(**settings, max_hours=1e-9))
    assert budgeted["epochs_run"] == 1 and len(budgeted["history"]) == 1
    assert (tmp_path / "budget" / "model.pt").is_file()
    resumed = train(small_trainset, tmp_path / "budget", tiny_config(), TrainConfig(**settings, max_hours=None))
    assert resumed["epochs_run"] == 3 and [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][0] == budgeted["history"][0]  # its first epoch (and wall time) was not run again
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_a_run_stopped_early_continues_from_a_checkpoint_kept_elsewhere(small_trainset, tmp_path):
    """``stop_after_epochs`` ends a run inside its schedule (the learning rate of epoch 1 of a
    3-epoch cosine, not of a 1-epoch one); its checkpoint, copied elsewhere (committed) and named
    by ``resume_from`` in a folder without one, continues exactly: the weights of a run never
    stopped. Neither setting makes it another run."""
    settings = dict(max_epochs=3, batch_size=32, seed=5, patience=10, max_train_batches_per_epoch=20)
    straight = train(small_trainset, tmp_path / "straight", tiny_config(), TrainConfig(**settings))
    stopped = train(small_trainset, tmp_path / "first", tiny_config(), TrainConfig(**settings, stop_after_epochs=1))
    assert stopped["epochs_run"] == 1
    assert stopped["history"][0]["learning_rate"] == pytest.approx(straight["history"][0]["learning_rate"], rel=1e-12)
    # its best epoch is its last: the best weights are not stored twice, and are found again below
    assert torch.load(tmp_path / "first" / "checkpoints" / "last.pt", weights_only=False)["best_state"] is None
    kept = tmp_path / "committed" / "last.pt"
    kept.parent.mkdir()
    shutil.copyfile(tmp_path / "first" / "checkpoints" / "last.pt", kept)

    resumed = train(small_trainset, tmp_path / "second", tiny_config(), TrainConfig(**settings, resume_from=str(kept)))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][0] == stopped["history"][0]  # epoch 1 came from the kept checkpoint
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_moving_average_of_weights_follows_its_half_life_and_forgets_the_start():
    """A weight stepping from 0 to 1: the average after k updates is 1 minus the product of the
    per-step decays, min(0.5 ** (1 / h), (1 + n) / (10 + n)), worked out here by hand."""
    net = torch.nn.Linear(1, 1, bias=False)
    net.weight.data.fill_(0.0)
    average = moving_average(net, half_life_steps=20)
    average.update_parameters(net)  # the first update copies
    net.weight.data.fill_(1.0)
    kept = 1.0
    for n in range(1, 51):
        average.update_parameters(net)
        kept *= min(0.5 ** (1 / 20), (1 + n) / (10 + n))
    assert average.module.weight.item() == pytest.approx(1 - kept, rel=1e-6)
    assert 1 - kept > 0.8  # early on the short window forgot the start faster than a 20-step half-life would

    net.weight.data.fill_(0.0)
    average.n_averaged.fill_(10**6)  # long after the start only the half-life counts
    for _ in range(20):
        average.update_parameters(net)
    assert average.module.weight.item() == pytest.approx((1 - kept) / 2, rel=1e-5)


def test_training_ships_the_averaged_weights_and_resumes_a_run_begun_without_them(small_trainset, tmp_path):
    """The model file holds the moving average (not the last weights) of the best epoch, and a
    checkpoint written before the average (or a model setting at its default) existed is
    resumed, not restarted."""
    settings = dict(max_epochs=2, batch_size=32, seed=5, patience=10, max_train_batches_per_epoch=20)
    settings["weight_average_half_life_epochs"] = 1
    payload = train(small_trainset, tmp_path, tiny_config(), TrainConfig(**settings, max_hours=1e-9))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert payload["epochs_run"] == 1
    assert payload["history"][0]["val_loss_last_weights"] != payload["history"][0]["val_loss"]
    averaged = {k.removeprefix("module."): v for k, v in checkpoint["weight_average"].items()}
    for key, value in payload["state_dict"].items():
        torch.testing.assert_close(value, averaged[key], msg=key)
        assert not torch.equal(value, checkpoint["model"][key]), key

    # as written before they existed: no average, no front_end setting, no last-weights record
    del checkpoint["weight_average"], checkpoint["model_config"]["front_end"]
    del checkpoint["history"][0]["val_loss_last_weights"]
    torch.save(checkpoint, tmp_path / "checkpoints" / "last.pt")
    resumed = train(small_trainset, tmp_path, tiny_config(), TrainConfig(**settings))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == checkpoint["history"][0]
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_loss_last_weights" in rows[0]


def test_warm_start_takes_up_a_model_file_where_its_checkpoint_is_gone(small_trainset, tmp_path):
    """A run that lost its checkpoint continues from its model file: the file's weights and
    history unchanged when no epoch is left to run; then the epochs after it, at the learning
    rates of a run never stopped once the fresh warm-up is over, or of a longer schedule;
    another run's file is refused."""
    settings = dict(max_epochs=3, batch_size=32, seed=5, patience=10, max_train_batches_per_epoch=20)
    settings["weight_average_half_life_epochs"] = 1
    straight = train(small_trainset, tmp_path / "straight", tiny_config(), TrainConfig(**settings))
    first = train(small_trainset, tmp_path / "lost", tiny_config(), TrainConfig(**settings, max_hours=1e-9))
    assert first["epochs_run"] == 1
    shipped = tmp_path / "shipped.pt"
    shutil.move(tmp_path / "lost" / "model.pt", shipped)
    shutil.rmtree(tmp_path / "lost")

    warm = {**settings, "warm_start": str(shipped)}
    unchanged = train(small_trainset, tmp_path / "a", tiny_config(), TrainConfig(**warm, max_hours=1e-9))
    assert unchanged["history"] == first["history"] and unchanged["epochs_run"] == 1
    for key, value in first["state_dict"].items():
        torch.testing.assert_close(unchanged["state_dict"][key], value, rtol=0, atol=0, msg=key)

    continued = train(small_trainset, tmp_path / "b", tiny_config(), TrainConfig(**warm))
    assert [h["epoch"] for h in continued["history"]] == [1, 2, 3]
    assert continued["history"][0] == first["history"][0]
    rates = [h["learning_rate"] for h in continued["history"][1:]]
    assert rates == pytest.approx([h["learning_rate"] for h in straight["history"][1:]], rel=1e-9)
    # continuing beats starting again: after two more epochs it validates better than a fresh
    # run after its first (same batches, same settings)
    assert continued["history"][-1]["val_loss"] < straight["history"][0]["val_loss"]

    longer = train(small_trainset, tmp_path / "c", tiny_config(), TrainConfig(**{**warm, "max_epochs": 4}))
    assert [h["epoch"] for h in longer["history"]] == [1, 2, 3, 4]
    assert longer["history"][-1]["learning_rate"] == pytest.approx(2e-3 * LearningRateSchedule(20, 80)(80), rel=1e-9)

    with pytest.raises(ValueError, match="another training run"):
        train(small_trainset, tmp_path / "d", tiny_config(), TrainConfig(**{**warm, "batch_size": 16}))


def test_checkpoint_written_before_a_setting_existed_is_resumed(small_trainset, tiny_model, tmp_path, caplog):
    """A setting added since a checkpoint was written takes its default there: the run resumes
    (here: finished, so nothing is trained again) instead of starting over."""
    shutil.copytree(Path(tiny_model).parent / "checkpoints", tmp_path / "checkpoints")
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    del checkpoint["train_config"]["teacher"], checkpoint["loss_weights"]["distillation"]
    torch.save(checkpoint, tmp_path / "checkpoints" / "last.pt")
    caplog.set_level("INFO", logger="sfh_pipeline.training")
    payload = train(small_trainset, tmp_path, tiny_config(), TrainConfig(**TINY_TRAINING, warm_start="elsewhere.pt"))
    assert "resuming" in caplog.text and "another training run" not in caplog.text
    assert payload["epochs_run"] == TINY_TRAINING["max_epochs"]
    assert payload["history"] == checkpoint["history"]


def test_distilled_network_learns_its_teachers_answers_not_the_truth(small_trainset, tiny_model, tmp_path):
    """With the truth's loss terms weighted 0, a linear-front-end student learns a teacher whose
    LW age is 0.8 dex too old: its LW ages follow the teacher's, offset from the truth by the
    teacher's offset; a teacher of other bands is refused."""
    from sfh_pipeline.model import LossWeights
    from sfh_pipeline.training import evaluate_split

    payload = torch.load(tiny_model, weights_only=False)
    payload["state_dict"]["summary_head.bias"][0] += 0.8  # lw_age, the first summary
    torch.save(payload, tmp_path / "teacher.pt")
    only_teacher = LossWeights(**ONLY_TEACHER)
    settings = dict(max_epochs=6, batch_size=32, learning_rate=3e-3, seed=2, redraw_noise=False)
    student = train(
        small_trainset,
        tmp_path / "student",
        tiny_config(front_end="linear"),
        TrainConfig(**settings, teacher=str(tmp_path / "teacher.pt")),
        only_teacher,
    )
    assert student["history"][-1]["train_distillation"] < 0.5 * student["history"][0]["train_distillation"]

    reader = TrainsetReader(small_trainset)
    net, _ = load_model_file(tmp_path / "student" / "model.pt")
    teacher, _ = load_model_file(tmp_path / "teacher.pt")
    _, learnt = evaluate_split(net, reader, "test", torch.device("cpu"))
    _, taught = evaluate_split(teacher, reader, "test", torch.device("cpu"))
    learnt_age, taught_age = learnt["pred_summary"][:, 0], taught["pred_summary"][:, 0]
    truth = taught["true_lw_age"]
    assert np.median(taught_age - truth) > 0.6  # the teacher is wrong as built
    assert np.median(learnt_age - truth) > 0.5
    assert abs(np.median(learnt_age - taught_age)) < 0.15
    # it learnt the teacher's errors too (measured 0.81 against 0.55)
    assert np.corrcoef(learnt_age, taught_age)[0, 1] > np.corrcoef(learnt_age, truth)[0, 1] + 0.1

    payload["trainset"]["filters"] = payload["trainset"]["filters"][:-1]
    torch.save(payload, tmp_path / "other_bands.pt")
    with pytest.raises(ValueError, match="filters differ"):
        train(small_trainset, tmp_path / "x", tiny_config(), TrainConfig(teacher=str(tmp_path / "other_bands.pt")))


def test_fine_tuning_starts_from_another_runs_weights(small_trainset, tiny_model, tmp_path):
    """A new run (another seed, its own schedule from epoch 0) started from a model file's
    weights (initial_weights), network and moving average, validates after one epoch at a
    vanishing learning rate as that file's network did, far better than the same run from random
    weights; a file of another architecture or of other bands is refused."""
    shipped = torch.load(tiny_model, weights_only=False)
    shipped_loss = min(h["val_loss"] for h in shipped["history"])  # the weights it ships
    settings = dict(max_epochs=1, batch_size=32, seed=7, learning_rate=1e-9, max_train_batches_per_epoch=5)
    settings["weight_average_half_life_epochs"] = 1
    tuned = train(
        small_trainset, tmp_path / "tuned", tiny_config(), TrainConfig(**settings, initial_weights=str(tiny_model))
    )
    fresh = train(small_trainset, tmp_path / "fresh", tiny_config(), TrainConfig(**settings))
    assert [h["epoch"] for h in tuned["history"]] == [1]
    assert tuned["history"][0]["val_loss"] == pytest.approx(shipped_loss, rel=0.02)
    assert fresh["history"][0]["val_loss"] > shipped_loss + 1.0
    for key, value in shipped["state_dict"].items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(tuned["state_dict"][key], value, rtol=0, atol=1e-5, msg=key)

    with pytest.raises(ValueError, match="another architecture"):
        train(small_trainset, tmp_path / "x", tiny_config(latent_dim=48), TrainConfig(initial_weights=str(tiny_model)))
    shipped["trainset"]["filters"] = shipped["trainset"]["filters"][:-1]
    torch.save(shipped, tmp_path / "other_bands.pt")
    other_bands = TrainConfig(initial_weights=str(tmp_path / "other_bands.pt"))
    with pytest.raises(ValueError, match=r"initial weights .*\(filters differ"):
        train(small_trainset, tmp_path / "y", tiny_config(), other_bands)


def test_learning_rate_after_a_warm_start_ramps_up_again_to_the_cosine_schedule():
    cold, warm = LearningRateSchedule(warmup=10, total=100), LearningRateSchedule(warmup=10, total=100, restart=40)
    assert [cold(s) for s in range(10)] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert cold(55) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * 45 / 90)))
    assert [warm(40 + k) for k in range(10)] == pytest.approx([cold(40 + k) * (k + 1) / 10 for k in range(10)])
    assert [warm(s) for s in range(50, 100)] == [cold(s) for s in range(50, 100)]


def test_checkpoint_of_another_architecture_is_a_clear_error(small_trainset, tiny_model, tmp_path):
    shutil.copytree(Path(tiny_model).parent / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="another architecture"):
        train(small_trainset, tmp_path, tiny_config(latent_dim=48), TrainConfig(max_epochs=3))
    payload = torch.load(tiny_model, weights_only=False)
    payload["state_dict"]["sfh_head.weight"] = torch.zeros(16, 7)
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="broken.pt"):
        load_model_file(tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_model_file(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="unknown model setting"):
        ModelConfig.from_dict({"chanels": [8]})


def test_pinball_loss_and_monotone_quantiles():
    """The pinball loss of a quantile is q * (y - yhat) above it and (1 - q) * (yhat - y) below;
    the posterior heads' quantiles increase whatever the weights."""
    from sfh_pipeline.model import QUANTILES, pinball

    quantiles = torch.zeros(1, len(QUANTILES))
    np.testing.assert_allclose(pinball(quantiles, torch.tensor([2.0]))[0].numpy(), 2.0 * np.array(QUANTILES), rtol=1e-6)
    np.testing.assert_allclose(
        pinball(quantiles, torch.tensor([-1.0]))[0].numpy(), 1.0 - np.array(QUANTILES), rtol=1e-6
    )
    torch.manual_seed(0)
    net = SFHNet(tiny_config(n_wave=500)).eval()
    torch.nn.init.normal_(net.quantile_head.weight, std=3.0)
    with torch.no_grad():
        out = net(torch.randn(8, 3, 500), torch.randn(8, 24))
    assert out["quantiles"].shape == (8, 2 * 16 + 2, len(QUANTILES))
    assert torch.all(torch.diff(out["quantiles"], dim=-1) >= 0)


def test_calibrate_quantiles_widens_too_narrow_intervals_to_their_level():
    """Quantiles of N(0, 0.5) for truths drawn from N(0, 1): the conformal widening makes the
    central intervals cover 68.27 % and 95.45 %, and leaves right ones nearly alone."""
    from scipy.stats import norm

    from sfh_pipeline.model import QUANTILES
    from sfh_pipeline.training import calibrate_quantiles

    rng = np.random.default_rng(5)
    n, n_bins = 20_000, 16
    sfh = np.full((n, n_bins), 1 / n_bins)
    truth = {"true_sfh": sfh, "true_logzsol": rng.normal(0, 1, (n, n_bins)), "true_formation": rng.normal(9, 1, (n, 2))}
    narrow = norm.ppf(QUANTILES) * 0.5
    right = norm.ppf(QUANTILES)
    q = np.zeros((n, 2 * n_bins + 2, len(QUANTILES)))
    q[:, :n_bins] = 1 / n_bins + 0.0 * right  # SFH truths exactly at the median
    q[:, n_bins : 2 * n_bins] = narrow
    q[:, 2 * n_bins :] = 9 + right
    widening = calibrate_quantiles({**truth, "pred_quantiles": q})
    for level, (lo, hi), target in (("68", (1, 3), 0.6827), ("95", (0, 4), 0.9545)):
        w = np.asarray(widening[level])
        values = np.concatenate([truth["true_sfh"], truth["true_logzsol"], truth["true_formation"]], 1)
        inside = (values >= q[..., lo] - w) & (values <= q[..., hi] + w)
        np.testing.assert_allclose(inside[:, n_bins:].mean(0), target, atol=0.01)
        needed = norm.ppf(0.5 + target / 2)  # half-width of the level's central interval of N(0, 1)
        np.testing.assert_allclose(w[n_bins : 2 * n_bins], needed - narrow[hi], atol=0.05)
        np.testing.assert_allclose(w[2 * n_bins :], needed - right[hi], atol=0.05)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_training_on_cuda_with_mixed_precision(small_trainset, tmp_path):
    """A few epochs on the GPU, where training runs in mixed precision (autocast + GradScaler):
    finite losses that fall, a model file recorded as trained on cuda with float32 weights, and
    the network predicts the same on the GPU as on the CPU."""
    import zarr

    from sfh_pipeline import load_predictor

    settings = TrainConfig(max_epochs=4, batch_size=32, learning_rate=3e-3, patience=10, max_train_batches_per_epoch=40)
    payload = train(small_trainset, tmp_path, tiny_config(), settings, model_name="gpu")
    assert payload["device"].startswith("cuda") and payload["world_size"] == 1
    history = payload["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for record in history:
        assert all(np.isfinite(value) for value in record.values()), record
    assert history[-1]["train_loss"] < history[0]["train_loss"], [h["train_loss"] for h in history]
    assert min(h["val_loss"] for h in history[1:]) < history[0]["val_loss"], [h["val_loss"] for h in history]
    # AMP was on: the loss scaler was enabled (a disabled GradScaler keeps no state)
    scaler = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["scaler"]
    assert scaler.get("scale", 0) > 0, scaler
    assert all(v.dtype == torch.float32 for v in payload["state_dict"].values() if v.is_floating_point())
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "learning_curve.png").is_file()

    group = zarr.open_group(small_trainset, mode="r")
    test = np.flatnonzero(np.asarray(group["split"][:]) == 2)[:64]
    inputs = [
        np.asarray(group[k].get_orthogonal_selection((test,))) for k in ("flux", "error", "mask", "phot", "phot_error")
    ]
    on_gpu = load_predictor(tmp_path / "model.pt", device="cuda").predict_normalised(*inputs)
    on_cpu = load_predictor(tmp_path / "model.pt", device="cpu").predict_normalised(*inputs)
    for key in ("lw_age", "mw_age", "lw_logz", "mw_logz"):
        assert np.all(np.isfinite(on_gpu[key])), key
        # TF32 convolutions on the GPU: agreement to about 1e-3, not to float32 precision
        np.testing.assert_allclose(on_gpu[key], on_cpu[key], atol=0.01, err_msg=key)


def test_export_checkpoint_writes_the_best_weights_so_far(small_trainset, tiny_model, tmp_path):
    """A training under way exports the model file ``train`` would write if it ended now: its best
    weights, not the last ones, with the same calibrations."""
    checkpoint = torch.load(Path(tiny_model).parent / "checkpoints" / "last.pt", weights_only=False)
    trained = torch.load(tiny_model, weights_only=False)
    # as written when the last epoch was the best: the best weights are not stored twice
    exported = export_checkpoint(Path(tiny_model).parent / "checkpoints" / "last.pt", small_trainset, tmp_path / "m.pt")
    for key, value in trained["state_dict"].items():
        torch.testing.assert_close(exported["state_dict"][key], value, msg=key)

    # as written after a later, worse epoch: its weights (zeros here) must not be exported
    checkpoint["best_state"] = checkpoint_best_state(checkpoint)
    checkpoint["model"] = {k: torch.zeros_like(v) for k, v in checkpoint["model"].items()}
    if checkpoint.get("weight_average") is not None:
        checkpoint["weight_average"] = {k: torch.zeros_like(v) for k, v in checkpoint["weight_average"].items()}
    checkpoint["bad_epochs"] = 1
    torch.save(checkpoint, tmp_path / "last.pt")
    exported = export_checkpoint(tmp_path / "last.pt", small_trainset, tmp_path / "model.pt")
    for key, value in trained["state_dict"].items():
        torch.testing.assert_close(exported["state_dict"][key], value, msg=key)
    assert exported["sigma_scale"] == pytest.approx(trained["sigma_scale"], rel=1e-5)
    assert exported["epochs_run"] == trained["epochs_run"]
    assert exported["train_config"] == trained["train_config"]  # stop conditions included
    load_model_file(tmp_path / "model.pt")

    checkpoint.update(best_state=None, history=[], epoch=0)
    torch.save(checkpoint, tmp_path / "unfinished.pt")
    with pytest.raises(ValueError, match="no finished epoch"):
        export_checkpoint(tmp_path / "unfinished.pt", small_trainset, tmp_path / "none.pt")
    assert not (tmp_path / "none.pt").exists()


def test_a_checkpoint_that_would_run_code_when_read_is_refused_unread(small_trainset, tiny_model, tmp_path):
    """Checkpoints are committed and resumed on other machines: they are read as tensors, plain
    data and numpy arrays only (their random state comes back intact), and one holding an object
    whose unpickling runs code is refused, naming the file, before the code runs."""
    from sfh_pipeline.training import read_checkpoint

    own = Path(tiny_model).parent / "checkpoints" / "last.pt"
    checkpoint = read_checkpoint(own)
    np.testing.assert_array_equal(checkpoint["rng"]["numpy"][1], torch.load(own, weights_only=False)["rng"]["numpy"][1])
    marker = tmp_path / "marker"
    hostile = tmp_path / "hostile.pt"
    torch.save({**checkpoint, "history": TouchesAFile(marker)}, hostile)
    with pytest.raises(ValueError, match="is refused: besides tensors and plain data") as info:
        read_checkpoint(hostile)
    assert str(hostile) in str(info.value)
    with pytest.raises(ValueError, match="is refused"):
        train(small_trainset, tmp_path / "run", tiny_config(), TrainConfig(**TINY_TRAINING, resume_from=str(hostile)))
    assert not marker.exists()
