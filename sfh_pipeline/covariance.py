"""The noise covariance of neighbouring MUSE spaxels, measured on the cube itself.

MUSE cubes are resampled from the detectors onto the spaxel grid, so neighbouring spaxels share
noise. STAT holds each spaxel's variance, not the covariance, so the error of a sum of N
spaxels propagated from STAT is too small, by a factor that grows with N. On the real A478 cube
that factor is 1 + 0.28 log10 N (1.54 for 64 spaxels; ``bench/real_noise.py``); on a mock cube
with independent noise it is 1.

The factor is measured from the data: square boxes of side 1, 2 and 4 spaxels are summed, and
in each summed spectrum the noise is the robust scatter of its second differences,
f_i - (f_(i-1) + f_(i+1)) / 2, which removes continua and lines several pixels wide (a stellar
absorption line at sigma 250 km/s spans 4 pixels), over the error propagated from STAT. The
ratio of that for N-spaxel boxes to that for single spaxels (whose value below 1 is the
wavelength correlation of MUSE pixels) is fitted as 1 + alpha log10 N.
"""

from __future__ import annotations

import numpy as np

#: Box sides (spaxels) summed to measure the covariance; 16 spaxels at most, so that a tile of
#: 32 x 32 spaxels holds enough boxes.
BOX_SIDES = (1, 2, 4)
#: Fewest boxes of a side with data for that side to count.
MIN_BOXES = 8
#: Boxes brighter than this median S/N per pixel are left out: there the second differences of
#: real absorption lines (depth x S/N / width^2) are no longer small against the noise.
MAX_BOX_SNR = 10.0


def difference_ratio(flux: np.ndarray, var: np.ndarray, good: np.ndarray) -> float:
    """Robust scatter of a spectrum's second differences over its propagated error.

    ``flux``, ``var`` (n_wave,) in any common unit (var in its square); ``good`` (n_wave - 2,)
    selects the differences to use. For independent Gaussian noise whose variance is ``var``,
    the ratio is 1.
    """
    second = flux[1:-1] - 0.5 * (flux[:-2] + flux[2:])
    pulls = second[good] / np.sqrt(var[1:-1][good])
    return float(1.4826 * np.median(np.abs(pulls - np.median(pulls))) / np.sqrt(1.5))


def box_ratios(flux: np.ndarray, var: np.ndarray, usable: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per box of ``side`` x ``side`` spaxels (non-overlapping, every spaxel with finite flux
    and positive variance in the ``usable`` planes): :func:`difference_ratio` of the summed
    spectrum, and its median S/N per pixel over those planes. ``flux``, ``var``:
    (n_wave, ny, nx); ``usable`` (n_wave,)."""
    good_plane = np.asarray(usable, bool)
    good = good_plane[1:-1] & good_plane[:-2] & good_plane[2:]
    ny, nx = flux.shape[1:]
    valid_spaxel = np.all(np.isfinite(flux[good_plane]) & (var[good_plane] > 0), axis=0)
    ratios, snr = [], []
    for y in range(0, ny - side + 1, side):
        for x in range(0, nx - side + 1, side):
            if not good.any() or not valid_spaxel[y : y + side, x : x + side].all():
                continue
            box_flux = flux[:, y : y + side, x : x + side].sum((1, 2))
            box_var = var[:, y : y + side, x : x + side].sum((1, 2))
            ratios.append(difference_ratio(box_flux, box_var, good))
            snr.append(np.median(box_flux[good_plane]) / np.median(np.sqrt(box_var[good_plane])))
    return np.array(ratios), np.array(snr)


def covariance_alpha(flux: np.ndarray, var: np.ndarray, usable: np.ndarray) -> dict:
    """``alpha`` of noise(sum of N spaxels) = propagated error x (1 + alpha log10 N).

    ``flux``, ``var``: (n_wave, ny, nx) of a region of a cube; ``usable`` (n_wave,) the planes
    to measure on (e.g. without sky lines). Boxes are those of :func:`box_ratios` with a
    median S/N per pixel of at most MAX_BOX_SNR.

    Returns ``alpha``, ``excess`` {N: ratio relative to one spaxel} and ``n_boxes`` {N: boxes
    used}. ``alpha`` is 0 when fewer than MIN_BOXES boxes of a side > 1 are usable, or when
    the fit is negative.
    """
    ratios: dict[int, float] = {}
    counts: dict[int, int] = {}
    for side in BOX_SIDES:
        values, snr = box_ratios(flux, var, usable, side)
        values = values[snr <= MAX_BOX_SNR] if values.size else values
        counts[side * side] = int(values.size)
        if values.size >= MIN_BOXES:
            ratios[side * side] = float(np.median(values))
    if 1 not in ratios or len(ratios) < 2:
        return {"alpha": 0.0, "excess": {}, "n_boxes": counts}
    excess = {n: ratio / ratios[1] for n, ratio in ratios.items()}
    logs = np.log10([n for n in excess if n > 1])
    rises = np.array([excess[n] - 1.0 for n in excess if n > 1])
    alpha = float(np.sum(logs * rises) / np.sum(logs**2))
    return {"alpha": max(alpha, 0.0), "excess": excess, "n_boxes": counts}


def error_factor(alpha: float, n_spaxels: np.ndarray) -> np.ndarray:
    """1 + alpha log10 N: what errors of sums of N spaxels propagated from STAT are multiplied by."""
    return 1.0 + alpha * np.log10(np.maximum(np.asarray(n_spaxels, float), 1.0))
