"""Peak memory of the tiled cube reads against cube size, printed as JSON.

Usage:  python bench/extract_memory.py [--sizes 48 96 192] [--tile 32] [--workdir /tmp/sfh-bench] [--save NAME]

For each size N, a PHANGS-MUSE-layout cube of N x N spaxels x 3681 planes (DATA and STAT,
float32; 2 x 4 x 3681 N^2 bytes) is written plane block by plane block with fitsio, then a
fresh process runs what the observe and infer jobs do with it: the continuum S/N map of the
whole cube (tile by tile, window planes only) and the extraction of every bin owned by one
inference tile (2 x 2-spaxel bins, all planes). Its peak resident memory (ru_maxrss) is
reported next to the cube's size on disk: it should not grow with the cube.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import fitsio
import numpy as np
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

N_WAVE = 3681


def write_cube(path: Path, n: int) -> None:
    header = [
        {"name": "BUNIT", "value": "10**(-20)*erg/s/cm**2/Angstrom"},
        {"name": "CTYPE1", "value": "RA---TAN"},
        {"name": "CTYPE2", "value": "DEC--TAN"},
        {"name": "CRVAL1", "value": 150.0},
        {"name": "CRVAL2", "value": 2.0},
        {"name": "CRPIX1", "value": n / 2},
        {"name": "CRPIX2", "value": n / 2},
        {"name": "CD1_1", "value": -0.2 / 3600},
        {"name": "CD2_2", "value": 0.2 / 3600},
        {"name": "CTYPE3", "value": "AWAV"},
        {"name": "CUNIT3", "value": "Angstrom"},
        {"name": "CRVAL3", "value": 4749.75},
        {"name": "CD3_3", "value": 1.25},
        {"name": "CRPIX3", "value": 1.0},
    ]
    rng = np.random.default_rng(0)
    with fitsio.FITS(str(path), "rw", clobber=True) as fits:
        fits.write(None)
        for name, level in (("DATA", 100.0), ("STAT", 4.0)):
            fits.create_image_hdu(dims=[N_WAVE, n, n], dtype="f4", extname=name)
            fits[name].write_keys(header)
            for z0 in range(0, N_WAVE, 64):
                z1 = min(z0 + 64, N_WAVE)
                block = (level * (1 + 0.01 * rng.standard_normal((z1 - z0, n, n)))).astype("f4")
                fits[name].write(block, start=[z0, 0, 0])


def child(path: str, tile: int) -> None:
    from sfh_pipeline.binning import continuum_snr
    from sfh_pipeline.extract import bin_geometry, extract_bin_spectra, tile_id
    from sfh_pipeline.phangs import MuseCube

    cube = MuseCube.open(path)
    ny, nx = cube.shape
    signal, noise = continuum_snr(cube, (5300.0, 5500.0), tile_size=tile)
    yy, xx = np.mgrid[:ny, :nx]
    bin_id = (yy // 2) * ((nx + 1) // 2) + xx // 2  # 2 x 2 bins, numbered by first spaxel
    geometry = bin_geometry(bin_id, tile)
    middle = tile_id(ny // tile // 2, nx // tile // 2)
    owned = geometry.owned_by(middle)
    flux, var = extract_bin_spectra(cube, bin_id, owned, geometry)
    assert np.isfinite(signal).all() and flux.shape == (owned.size, N_WAVE)
    print(
        json.dumps(
            {
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "bins_extracted": int(owned.size),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 96, 192])
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--workdir", default="/tmp/sfh-bench")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tile)
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        path = workdir / f"cube_{n}.fits"
        write_cube(path, n)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path), "--tile", str(args.tile)],
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(
            {
                "spaxels": n * n,
                "cube_mb": round(path.stat().st_size / 2**20, 1),
                "peak_rss_mb": round(figures["peak_rss_mb"], 1),
                "seconds": round(time.perf_counter() - start, 1),
                "bins_extracted": figures["bins_extracted"],
            }
        )
        path.unlink()
    report(
        {
            "tile_spaxels": args.tile,
            "runs": results,
            "rss_growth_largest_vs_smallest": round(results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"], 3),
        },
        args.save,
    )


if __name__ == "__main__":
    main()
