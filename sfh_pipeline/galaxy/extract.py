"""Binned spectra from a MUSE cube, tile by tile, with memory bounded by the tile.

The spaxel grid is cut into square tiles of ``tile_size`` spaxels. Every Voronoi bin is
*owned* by the tile holding its first spaxel (row-major order), and the job of a tile sums
the spectra of the bins it owns. Bins that cross a tile edge are read whole by their owner
(the read box is the union of the owned bins' bounding boxes, so it exceeds the tile by at
most the size of the largest bin), which makes tiled extraction exactly equal to untiled
extraction: each bin is summed once, over the same spaxels, in the same (row-major) order.

Units: flux sums in erg s^-1 cm^-2 A^-1 (per bin), variances in their square.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse

from .phangs import MuseCube


def tile_id(iy: int, ix: int) -> str:
    return f"y{iy:03d}x{ix:03d}"


def tile_slices(shape: tuple[int, int], tile_size: int) -> dict[str, tuple[slice, slice]]:
    """Tiles of a (ny, nx) spaxel grid: ``{tile_id: (y slice, x slice)}``, row-major."""
    if tile_size < 1:
        raise ValueError(f"tile size must be a positive number of spaxels, got {tile_size}")
    ny, nx = shape
    return {
        tile_id(iy, ix): (slice(y0, min(y0 + tile_size, ny)), slice(x0, min(x0 + tile_size, nx)))
        for iy, y0 in enumerate(range(0, ny, tile_size))
        for ix, x0 in enumerate(range(0, nx, tile_size))
    }


@dataclasses.dataclass(frozen=True)
class BinGeometry:
    """Where each Voronoi bin lies on the spaxel grid (arrays indexed by bin id).

    owner : owning tile id of each bin; ``box`` (n_bins, 4) = y0, y1, x0, x1 (half-open)
    bounding box; ``n_spaxels`` per bin.
    """

    owner: np.ndarray
    box: np.ndarray
    n_spaxels: np.ndarray

    def owned_by(self, tile: str) -> np.ndarray:
        return np.flatnonzero(self.owner == tile)


def bin_geometry(bin_id: np.ndarray, tile_size: int) -> BinGeometry:
    """Owner tile, bounding box and size of every bin of a bin map (-1 = no bin)."""
    bin_id = np.asarray(bin_id)
    n_bins = int(bin_id.max()) + 1 if (bin_id >= 0).any() else 0
    flat = bin_id.ravel()
    inside = np.flatnonzero(flat >= 0)
    ids = flat[inside]
    y, x = np.unravel_index(inside, bin_id.shape)
    n_spaxels = np.bincount(ids, minlength=n_bins)
    if n_bins and (n_spaxels == 0).any():
        raise ValueError(f"bin ids are not contiguous: bins {np.flatnonzero(n_spaxels == 0)[:10]} have no spaxel")
    first = np.full(n_bins, flat.size, dtype=np.int64)
    np.minimum.at(first, ids, inside)
    fy, fx = np.unravel_index(first, bin_id.shape)
    owner = np.array([tile_id(a, b) for a, b in zip(fy // tile_size, fx // tile_size)], dtype=object)
    box = np.empty((n_bins, 4), dtype=np.int64)
    box[:, 0] = bin_id.shape[0]
    box[:, 2] = bin_id.shape[1]
    box[:, 1] = box[:, 3] = 0
    np.minimum.at(box[:, 0], ids, y)
    np.maximum.at(box[:, 1], ids, y + 1)
    np.minimum.at(box[:, 2], ids, x)
    np.maximum.at(box[:, 3], ids, x + 1)
    return BinGeometry(owner=owner, box=box, n_spaxels=n_spaxels)


def sum_bins(bin_id: np.ndarray, bins: np.ndarray, images: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Sums over the spaxels of ``bins`` of a stack of images.

    Parameters
    ----------
    bin_id : (ny, nx) bin map of the whole grid.
    bins : (n,) bin ids to sum.
    images : (k, by, bx) values of a box of the grid whose first spaxel is ``origin`` and
        which contains every spaxel of ``bins``.

    Returns
    -------
    (n, k) sums in float64. A plane where any spaxel of a bin is NaN is NaN for that bin
    (a partial sum would be biased low).
    """
    bins = np.asarray(bins, dtype=np.int64)
    k, by, bx = images.shape
    y0, x0 = origin
    local = np.asarray(bin_id)[y0 : y0 + by, x0 : x0 + bx]
    lookup = np.full(int(max(bins.max(initial=-1), local.max(initial=-1))) + 2, -1, dtype=np.int64)
    lookup[bins] = np.arange(bins.size)
    flat = local.ravel()
    row = np.where(flat >= 0, lookup[np.where(flat >= 0, flat, -1)], -1)
    keep = np.flatnonzero(row >= 0)
    if np.bincount(row[keep], minlength=bins.size).sum() != np.isin(np.asarray(bin_id), bins).sum():
        raise ValueError("the box does not contain every spaxel of the requested bins")
    indicator = scipy.sparse.csr_matrix((np.ones(keep.size), (row[keep], keep)), shape=(bins.size, flat.size))
    values = images.reshape(k, -1).T.astype(np.float64)  # (spaxels, k)
    bad = ~np.isfinite(values)
    sums = np.asarray(indicator @ np.where(bad, 0.0, values))
    n_bad = np.asarray(indicator @ bad.astype(np.float64))
    sums[n_bad > 0] = np.nan
    return sums


def read_box(bins: np.ndarray, geometry: BinGeometry) -> tuple[slice, slice]:
    """The smallest box holding every spaxel of ``bins``."""
    box = geometry.box[bins]
    return slice(int(box[:, 0].min()), int(box[:, 1].max())), slice(int(box[:, 2].min()), int(box[:, 3].max()))


def extract_bin_spectra(
    cube: MuseCube, bin_id: np.ndarray, bins: np.ndarray, geometry: BinGeometry, planes: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray]:
    """Summed flux and variance of ``bins`` (n, n_planes), reading only their box of the cube."""
    if len(bins) == 0:
        n = len(range(*planes.indices(cube.wavelength_aa.size)))
        return np.zeros((0, n)), np.zeros((0, n))
    box_flux, box_var, origin = read_bin_box(cube, bins, geometry, planes)
    return sum_bins(bin_id, bins, box_flux, origin), sum_bins(bin_id, bins, box_var, origin)


def read_bin_box(
    cube: MuseCube, bins: np.ndarray, geometry: BinGeometry, planes: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Flux and variance (n_planes, ny, nx) of the cube's box holding ``bins`` (erg s^-1 cm^-2
    A^-1 and its square), and the box's (y, x) origin for :func:`sum_bins`."""
    ys, xs = read_box(bins, geometry)
    flux, var = cube.read_tile(ys, xs, planes)
    return flux, var, (ys.start, xs.start)


def wavelength_planes(
    wave_aa: np.ndarray,
    rest_range_aa: tuple[float, float],
    velocity_range_kms: tuple[float, float],
    margin_aa: float = 10.0,
) -> slice:
    """Planes of an observed wavelength axis covering a rest-frame range at any velocity in a range.

    Velocities follow ``1 + z = exp(v / c)``; ``margin_aa`` extra on either side for rebinning.
    """
    from ..core.constants import C_KMS

    lo = rest_range_aa[0] * np.exp(velocity_range_kms[0] / C_KMS) - margin_aa
    hi = rest_range_aa[1] * np.exp(velocity_range_kms[1] / C_KMS) + margin_aa
    if wave_aa[0] > lo or wave_aa[-1] < hi:
        raise ValueError(
            f"the cube's wavelength axis ({wave_aa[0]:.1f}-{wave_aa[-1]:.1f} A) does not cover "
            f"{lo:.1f}-{hi:.1f} A (the model's rest-frame window at the galaxy's velocities)"
        )
    start = int(np.searchsorted(wave_aa, lo, side="right")) - 1
    stop = int(np.searchsorted(wave_aa, hi, side="left")) + 1
    return slice(start, stop)
