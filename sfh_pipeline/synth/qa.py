"""Quick-look figures of stage products (PNG, for users and the Snakemake report)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..core.atomic import atomic_path  # noqa: E402
from ..ssp import load_ssp  # noqa: E402


def save_figure_atomically(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` via a temporary file and a rename, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_ssp_library(store: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Spectra at solar-like metallicity for a few ages, mass fractions and resolution."""
    lib = load_ssp(store)
    iz = int(np.argmin(np.abs(lib.logzsol)))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    norm_window = (lib.wavelength_aa > 5400) & (lib.wavelength_aa < 5600)
    for age in (3e6, 3e7, 3e8, 1e9, 3e9, 1e10):
        ia = int(np.argmin(np.abs(np.log10(lib.ages_yr / age))))
        spec = lib.flux[iz, ia]
        axes[0].plot(
            lib.wavelength_aa, spec / spec[norm_window].mean(), lw=0.6, label=f"{lib.ages_yr[ia] / 1e9:.3g} Gyr"
        )
    axes[0].set(
        xlabel="wavelength [Å]",
        ylabel="f$_λ$ / f$_λ$(5500 Å)",
        yscale="log",
        title=f"{lib.attrs.get('name', '')}: log Z/Z$_⊙$ = {lib.logzsol[iz]:+.2f}",
    )
    axes[0].legend(fontsize=7)
    for k, logz in enumerate(lib.logzsol):
        axes[1].plot(lib.ages_yr, lib.surviving_mass_fraction[k], label=f"{logz:+.2f}")
    axes[1].set(
        xscale="log", xlabel="age [yr]", ylabel="surviving mass fraction", title=lib.attrs.get("mass_definition", "")
    )
    axes[1].legend(title="log Z/Z$_⊙$", fontsize=7)
    axes[2].plot(lib.wavelength_aa, lib.fwhm_aa)
    axes[2].set(xlabel="wavelength [Å]", ylabel="intrinsic FWHM [Å]", ylim=(0, 10))
    fig.tight_layout()
    return save_figure_atomically(fig, output)


def plot_trainset_prior(store: str | os.PathLike, output: str | os.PathLike, max_samples: int = 20000) -> Path:
    """The training set's prior: distributions of the labels, mean SFH per family, examples."""
    import zarr

    group = zarr.open_group(store, mode="r")
    n = min(int(group.attrs["n_spectra"]), max_samples)
    get = {
        name: np.asarray(group[name][:n])
        for name in ("lw_age", "mw_age", "lw_logz", "mw_logz", "av", "snr", "sigma_kms", "sfh", "sfh_family")
    }
    families = group.attrs["sfh_families"]
    edges = np.asarray(group.attrs["age_bin_edges_yr"])
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    panels = [
        ("lw_age", "mw_age", "⟨log age/yr⟩ (light, mass)"),
        ("lw_logz", "mw_logz", "⟨log Z/Z$_⊙$⟩ (light, mass)"),
        ("av", None, "A$_V$ [mag]"),
        ("snr", None, "S/N per pixel"),
        ("sigma_kms", None, "σ [km/s]"),
    ]
    for ax, (a, b, label) in zip(axes.flat, panels):
        values = np.log10(get[a]) if a == "snr" else get[a]
        ax.hist(values, bins=50, histtype="step", label=a)
        if b:
            ax.hist(get[b], bins=50, histtype="step", label=b)
            ax.legend(fontsize=8)
        ax.set(xlabel=("log " if a == "snr" else "") + label, ylabel="N")
    ax = axes.flat[5]
    centres = np.log10(np.maximum(0.5 * (edges[1:] + edges[:-1]), 1e5))
    for k, name in enumerate(families):
        sel = get["sfh_family"] == k
        if sel.any():
            ax.step(centres, get["sfh"][sel].mean(0), where="mid", label=f"{name} ({sel.sum()})")
    ax.set(xlabel="log lookback time of bin [yr]", ylabel="mean mass fraction", yscale="log")
    ax.legend(fontsize=6)
    ax = axes.flat[6]
    ax.scatter(get["mw_age"], get["mw_logz"], s=1, alpha=0.3)
    ax.set(xlabel="⟨log age⟩$_M$", ylabel="⟨log Z/Z$_⊙$⟩$_M$")
    ax = axes.flat[7]
    wave = np.asarray(group["wavelength_aa"][:])
    flux, mask = np.asarray(group["flux"][:4]), np.asarray(group["mask"][:4])
    for i in range(flux.shape[0]):
        shown = np.where(mask[i] == 0, flux[i], np.nan)
        ax.plot(wave, shown + 0.8 * i, lw=0.5, label=f"S/N {group['snr'][i]:.0f}, ⟨log age⟩$_L$ {get['lw_age'][i]:.2f}")
    ax.set(xlabel="rest wavelength [Å]", ylabel="flux / norm (+ offset)")
    ax.legend(fontsize=6)
    fig.suptitle(f"training-set prior: {group.attrs['n_spectra']} spectra, SSP {group.attrs['ssp']['name']}")
    fig.tight_layout()
    return save_figure_atomically(fig, output)


def plot_learning_curves(history: list[dict[str, float]], output: str | os.PathLike) -> Path:
    """Training and validation loss per epoch, total and per term."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="total loss")
    axes[0].legend()
    for key in (k[len("val_") :] for k in history[0] if k.startswith("val_") and k != "val_loss"):
        axes[1].plot(epochs, [h[f"val_{key}"] for h in history], "o-", label=key)
    axes[1].set(xlabel="epoch", ylabel="validation loss term", yscale="symlog")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure_atomically(fig, output)
