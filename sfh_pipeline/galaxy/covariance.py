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
#: Boxes summed and measured in one array operation (memory: ~8 bytes x planes x this).
BOXES_AT_ONCE = 1024


def difference_ratio(flux: np.ndarray, var: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Robust scatter of spectra's second differences over their propagated error.

    ``flux``, ``var`` (n_wave, ...) in any common unit (var in its square), spectra along the
    first axis; ``good`` (n_wave - 2,) selects the differences to use. For independent Gaussian
    noise whose variance is ``var``, the ratio is 1. One ratio per spectrum (shape ``...``).
    """
    second = flux[1:-1] - 0.5 * (flux[:-2] + flux[2:])
    pulls = _spectra_last(second[good] / np.sqrt(var[1:-1][good]))
    deviation = np.abs(pulls - np.median(pulls, axis=-1, keepdims=True))
    return 1.4826 * np.median(deviation, axis=-1, overwrite_input=True) / np.sqrt(1.5)


def _spectra_last(values: np.ndarray) -> np.ndarray:
    """``values`` (n_wave, ...) as a C-contiguous (..., n_wave) copy: numpy's median along a
    contiguous last axis is several times faster than along a strided first one."""
    return np.ascontiguousarray(np.moveaxis(values, 0, -1))


def box_ratios(flux: np.ndarray, var: np.ndarray, usable: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per box of ``side`` x ``side`` spaxels (non-overlapping, from the first row and column,
    in row-major order; every spaxel with finite flux and positive variance in the ``usable``
    planes): :func:`difference_ratio` of the summed spectrum, and its median S/N per pixel over
    those planes. ``flux``, ``var``: (n_wave, ny, nx); ``usable`` (n_wave,).

    All boxes of a band of box rows are measured at once, in bands of about BOXES_AT_ONCE boxes
    so that memory stays bounded (a 128 x 128-spaxel tile has 16,384 one-spaxel boxes)."""
    good_plane = np.asarray(usable, bool)
    good = good_plane[1:-1] & good_plane[:-2] & good_plane[2:]
    n_wave, ny, nx = flux.shape
    rows, cols = ny // side, nx // side
    if not good.any() or rows == 0 or cols == 0:
        return np.zeros(0), np.zeros(0)
    valid_spaxel = np.all(np.isfinite(flux[good_plane]) & (var[good_plane] > 0), axis=0)
    valid_box = valid_spaxel[: rows * side, : cols * side].reshape(rows, side, cols, side).all((1, 3))
    ratios, snr = [], []
    band = max(1, BOXES_AT_ONCE // cols)
    for row in range(0, rows, band):
        n_rows = min(band, rows - row)
        window = (slice(None), slice(row * side, (row + n_rows) * side), slice(0, cols * side))
        keep = valid_box[row : row + n_rows].ravel()
        box_flux, box_var = (
            cube[window].reshape(n_wave, n_rows, side, cols, side).sum((2, 4)).reshape(n_wave, -1)[:, keep]
            for cube in (flux, var)
        )
        ratios.append(difference_ratio(box_flux, box_var, good))
        signal = np.median(_spectra_last(box_flux[good_plane]), axis=-1, overwrite_input=True)
        noise = np.median(_spectra_last(np.sqrt(box_var[good_plane])), axis=-1, overwrite_input=True)
        snr.append(signal / noise)
    return np.concatenate(ratios).astype(float), np.concatenate(snr).astype(float)


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
