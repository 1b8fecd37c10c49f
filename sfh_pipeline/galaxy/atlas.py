"""Figures of the maps: a quick-look page per galaxy and the sample atlas."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..core.atomic import atomic_path, write_json_atomically
from ..core.products import SUMMARY_HDUS, read_maps

PANELS = (
    ("LW_AGE", "light-weighted log age / yr", "viridis"),
    ("MW_AGE", "mass-weighted log age / yr", "viridis"),
    ("LW_LOGZ", "light-weighted log Z/Z$_\\odot$", "plasma"),
    ("MW_LOGZ", "mass-weighted log Z/Z$_\\odot$", "plasma"),
    ("MASS_DENSITY", "log $\\Sigma_*$ / M$_\\odot$ kpc$^{-2}$", "magma"),
    ("CHI2", "forward-model $\\chi^2_\\nu$", "cividis"),
    ("T50", "log T$_{50}$ / yr (half the mass formed)", "viridis"),
    ("T90", "log T$_{90}$ / yr (90 % of the mass formed)", "viridis"),
)


def _imshow(ax, image, label, cmap, fig, vmin=None, vmax=None):
    finite = image[np.isfinite(image)]
    if finite.size and vmin is None:
        vmin, vmax = np.percentile(finite, [2, 98])
    im = ax.imshow(image, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(label, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)


def quicklook(maps_path: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """One page: the six summary maps, T50 and T90, and the mass fraction formed in four
    lookback-time ranges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, _, edges, header = read_maps(maps_path)
    groups = [(0.0, 1e8), (1e8, 1e9), (1e9, 5e9), (5e9, np.inf)]
    fig, axes = plt.subplots(3, 5, figsize=(16, 9.5))
    flat = axes.ravel()
    for ax, (name, label, cmap) in zip(flat[:8], PANELS):
        _imshow(ax, images[name], label, cmap, fig)
    upper = edges[1:]
    for ax, (lo, hi) in zip(flat[8:12], groups):
        planes = (upper > lo) & (upper <= hi)
        frac = images["SFH"][planes].sum(0)
        _imshow(
            ax, frac, f"mass fraction formed {lo / 1e9:g}-{min(hi, edges[-1]) / 1e9:g} Gyr ago", "Greys_r", fig, 0, 1
        )
    _imshow(flat[12], images["SNR"], "S/N of the bin", "Greys_r", fig)
    flat[14].set_axis_off()
    ax = flat[13]
    inside = images["BIN_ID"] >= 0
    sfh = np.nanmean(images["SFH"][:, inside], axis=1) if inside.any() else np.zeros(edges.size - 1)
    ax.stairs(sfh / np.diff(edges) * 1e9, np.log10(np.maximum(edges, 1e6)), color="k")
    ax.set_yscale("log")
    ax.set_xlabel("log lookback time / yr", fontsize=8)
    ax.set_title("mean SFH (per Gyr, normalised to 1 M formed)", fontsize=8)
    fig.suptitle(f"{header.get('GALAXY', '')} - model {header.get('MODEL', '')}", fontsize=11)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def sample_atlas(
    maps_paths: Sequence[str | os.PathLike], out_png: str | os.PathLike, out_json: str | os.PathLike
) -> dict:
    """All galaxies side by side (light-weighted age and metallicity, mass density), and a
    JSON summary per galaxy (bins, median ages and metallicities, median chi^2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps_paths)
    fig, axes = plt.subplots(n, 3, figsize=(10, 3.2 * n), squeeze=False)
    summary = {}
    for row_axes, path in zip(axes, maps_paths):
        images, _, _, header = read_maps(path)
        galaxy = header.get("GALAXY", os.path.basename(str(path)))
        for ax, name in zip(row_axes, ("LW_AGE", "LW_LOGZ", "MASS_DENSITY")):
            label, cmap = next((lab, c) for key, lab, c in PANELS if key == name)
            vmin, vmax = {"LW_AGE": (8.0, 10.2), "LW_LOGZ": (-1.0, 0.4)}.get(name, (None, None))
            _imshow(ax, images[name], f"{galaxy}: {label}", cmap, fig, vmin, vmax)
        inside = images["BIN_ID"] >= 0
        summary[galaxy] = {
            "maps": str(path),
            "n_bins": int(images["BIN_ID"].max() + 1),
            **{f"median_{k.lower()}": float(np.nanmedian(images[k][inside])) for k in (*SUMMARY_HDUS, "CHI2")},
        }
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    write_json_atomically(out_json, summary)
    return summary
