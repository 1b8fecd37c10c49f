"""What the session fixtures of conftest.py build: the small training set and the tiny model on it."""

from __future__ import annotations

#: Enough spectra, S/N and epochs for the fixture model to learn ages (Spearman ~0.8 with the
#: truth on its test split; issue 12: a 600-spectrum, 2-epoch model had learned nothing, so the
#: prediction tests had no power). The analytic library's log Z is too faint for this network:
#: its log Z tests check bias and calibration, not ranking.
SMALL_TRAINSET = {"n_spectra": 3000, "chunk_size": 500, "seed": 5, "snr": [20.0, 150.0]}
#: Noise is not drawn anew each epoch: this network is too small to learn 2,400 noise
#: realisations by heart, and redrawing slows it (measured: Spearman lw_age 0.82 -> 0.77,
#: mw_age 68 % coverage 0.66 -> 0.57 on the test split).
TINY_TRAINING = {"max_epochs": 15, "batch_size": 32, "learning_rate": 3e-3, "patience": 15, "redraw_noise": False}

#: The tiny network (ModelConfig arguments): small enough to train in about a minute on 2 cores.
TINY_MODEL = dict(
    stem_channels=8, channels=(8, 12, 16, 16), attention_dim=16, attention_heads=2, photometry_dim=16, latent_dim=32
)

#: Loss weights (model.loss) of a distillation that learns from its teacher only, none from the truth.
ONLY_TEACHER = dict(sfh_cross_entropy=0, sfh_cumulative_l1=0, logz_mass_weighted=0, summary_nll=0, posterior_pinball=0)
