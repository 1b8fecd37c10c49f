"""Quick-look figures of stage products (PNG, for users and the Snakemake report)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .ssp import load_ssp  # noqa: E402


def save_figure_atomically(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` to ``path`` via a temporary file and a rename, then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_ssp_library(store: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Spectra at solar-like metallicity for a few ages, mass fractions and resolution."""
    lib = load_ssp(store)
    iz = int(np.argmin(np.abs(lib.logzsol)))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    norm_window = (lib.wavelength_aa > 5400) & (lib.wavelength_aa < 5600)
    for age in (3e6, 3e7, 3e8, 1e9, 3e9, 1e10):
        ia = int(np.argmin(np.abs(np.log10(lib.ages_yr / age))))
        spec = lib.flux[iz, ia]
        axes[0].plot(lib.wavelength_aa, spec / spec[norm_window].mean(), lw=0.6,
                     label=f"{lib.ages_yr[ia] / 1e9:.3g} Gyr")
    axes[0].set(xlabel="wavelength [Å]", ylabel="f$_λ$ / f$_λ$(5500 Å)", yscale="log",
                title=f"{lib.attrs.get('name', '')}: log Z/Z$_⊙$ = {lib.logzsol[iz]:+.2f}")
    axes[0].legend(fontsize=7)
    for k, logz in enumerate(lib.logzsol):
        axes[1].plot(lib.ages_yr, lib.surviving_mass_fraction[k], label=f"{logz:+.2f}")
    axes[1].set(xscale="log", xlabel="age [yr]", ylabel="surviving mass fraction",
                title=lib.attrs.get("mass_definition", ""))
    axes[1].legend(title="log Z/Z$_⊙$", fontsize=7)
    axes[2].plot(lib.wavelength_aa, lib.fwhm_aa)
    axes[2].set(xlabel="wavelength [Å]", ylabel="intrinsic FWHM [Å]", ylim=(0, 10))
    fig.tight_layout()
    return save_figure_atomically(fig, output)
