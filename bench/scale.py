"""What each per-galaxy stage of a finished run cost, how it grows with galaxy size, and what
the whole PHANGS-MUSE sample would cost on a cluster, from the run's ``benchmarks/`` files.

Usage:
    python bench/scale.py --run DIR [--smaller DIR ...] [--nodes 10] [--cores-per-node 32]
        [--pointings 5,6,...] [--save scale]

``DIR`` is a workflow's working directory after a run (``benchmarks/``, ``results/<galaxy>/
observe/bins.fits``). Stages per galaxy, from Snakemake's ``benchmark:`` files: ``mock`` (mock
galaxies only: reported, left out of the dominant stage and the projection), ``observe_hst``,
``observe_bins``, ``infer`` (the sum over the galaxy's tile jobs), ``maps``, ``validate``.
A galaxy's size is the spaxel count of its MUSE grid (``bins.fits``).

Printed JSON:

* ``galaxies``: per galaxy its spaxels, bins and per stage ``wall_s``, ``cpu_s``,
  ``max_rss_mb`` (and ``jobs`` for infer);
* ``stages``: per stage the sums over galaxies, ``max_rss_mb``, and ``exponent``: the slope
  of log CPU seconds against log spaxels over the galaxies of this run and of the ``--smaller``
  runs (null unless their sizes span a factor of 4); ``dominant_stage`` (most CPU);
* ``max_peak_rss_mb`` over every benchmarked job of the run, training included;
* the projection for the sample: each stage's CPU time scaled from this run's largest galaxy
  by (spaxels ratio)^exponent (exponent 1 where unmeasured), for galaxies of ``--pointings``
  MUSE pointings of 300 x 300 spaxels (default: an assumed spread of the survey's documented
  168 pointings over 19 galaxies, 5 to 15 each, Emsellem et al. 2022). ``projected_sample_core_h`` sums them;
  ``projected_sample_wall_h`` is the larger of that over all cores and the longest galaxy's
  chain of jobs that wait for each other (hst, bins, its slowest tile, maps, validate); the
  wall time of a one-job stage scales like its CPU time, a tile's does not.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

#: Per-galaxy stages and their benchmark files (relative to benchmarks/; {g} = galaxy).
STAGES = {
    "mock": "mock/{g}.tsv",
    "observe_hst": "observe/{g}/hst.tsv",
    "observe_bins": "observe/{g}/bins.tsv",
    "infer": "infer/{g}/*.tsv",
    "maps": "maps/{g}.tsv",
    "validate": "validate/{g}.tsv",
}
#: Stages that real galaxies do not have: reported, never projected onto the sample.
MOCK_ONLY_STAGES = ("mock",)
#: Stages run as one job per tile of fixed size: more spaxels mean more jobs, not longer ones.
TILED_STAGES = ("infer",)
SPAXELS_PER_POINTING = 300 * 300
#: An assumed spread of PHANGS-MUSE's 168 pointings over 19 galaxies, 5 to 15 each (the totals
#: and the range are Emsellem et al. 2022's; the spread in between is not).
DEFAULT_POINTINGS = (5, 5, 6, 6, 6, 7, 7, 8, 8, 8, 9, 9, 10, 10, 11, 12, 12, 14, 15)


def read_benchmark(path: Path) -> dict[str, float]:
    """One Snakemake benchmark file: wall seconds ``s``, ``cpu_time`` (s), ``max_rss`` (MB)."""
    with open(path, newline="") as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))

    def number(key: str) -> float:
        try:
            return float(row[key])
        except (KeyError, ValueError):  # "NA" where psutil could not measure
            return math.nan

    return {"wall_s": number("s"), "cpu_s": number("cpu_time"), "max_rss_mb": number("max_rss")}


def galaxy_costs(run: Path) -> dict[str, dict]:
    """Per galaxy of the run: spaxels, bins, and per stage wall, CPU and peak memory."""
    out = {}
    for bins_path in sorted(run.glob("results/*/observe/bins.fits")):
        galaxy = bins_path.parents[1].name
        with fits.open(bins_path) as hdul:
            bin_id = np.asarray(hdul["BIN_ID"].data)
        entry = {"spaxels": int(bin_id.size), "bins": int(bin_id.max()) + 1, "stages": {}}
        for stage, pattern in STAGES.items():
            files = sorted((run / "benchmarks").glob(pattern.format(g=galaxy)))
            if not files:
                continue
            records = [read_benchmark(f) for f in files]
            entry["stages"][stage] = {
                "wall_s": float(np.nansum([r["wall_s"] for r in records])),
                "cpu_s": float(np.nansum([r["cpu_s"] for r in records])),
                "max_rss_mb": float(np.nanmax([r["max_rss_mb"] for r in records])),
                "jobs": len(records),
                "one_job_wall_s": float(np.nanmax([r["wall_s"] for r in records])),
            }
        out[galaxy] = entry
    return out


#: Smallest ratio of the largest to the smallest galaxy for which a slope is fitted: over a
#: narrower range, run-to-run noise and galaxies of other kinds make the slope meaningless.
MIN_SIZE_RATIO = 4.0


def exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log cost against log size; None when the sizes span less than
    :data:`MIN_SIZE_RATIO`."""
    sizes = np.array([p[0] for p in points], float)
    costs = np.array([p[1] for p in points], float)
    ok = (sizes > 0) & (costs > 0) & np.isfinite(costs)
    if not ok.any() or sizes[ok].max() < MIN_SIZE_RATIO * sizes[ok].min():
        return None
    return float(np.polyfit(np.log(sizes[ok]), np.log(costs[ok]), 1)[0])


def project(
    galaxies: dict[str, dict], exponents: dict[str, float | None], sample_spaxels: list[int], cores: int
) -> dict[str, float]:
    """Core hours and wall hours of a sample of galaxies of ``sample_spaxels`` spaxels, scaled
    from the largest galaxy of the run stage by stage."""
    reference = max(galaxies.values(), key=lambda g: g["spaxels"])
    core_s, longest_chain_s = 0.0, 0.0
    for size in sample_spaxels:
        chain = 0.0
        for stage, cost in reference["stages"].items():
            if stage in MOCK_ONLY_STAGES:
                continue
            factor = (size / reference["spaxels"]) ** (exponents.get(stage) or 1.0)
            core_s += cost["cpu_s"] * factor
            chain += cost["one_job_wall_s"] * (1.0 if stage in TILED_STAGES else factor)
        longest_chain_s = max(longest_chain_s, chain)
    return {
        "projected_sample_core_h": core_s / 3600,
        "projected_sample_wall_h": max(core_s / cores, longest_chain_s) / 3600,
        "projection_reference_galaxy": next(k for k, v in galaxies.items() if v is reference),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's working directory")
    parser.add_argument("--smaller", type=Path, nargs="*", default=[], help="other runs, for the exponents")
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument(
        "--pointings", default=",".join(map(str, DEFAULT_POINTINGS)), help="per galaxy, comma-separated"
    )
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    galaxies = galaxy_costs(args.run)
    if not galaxies:
        sys.exit(f"no results/*/observe/bins.fits under {args.run}: is it a workflow's working directory?")
    others = [g for run in args.smaller for g in galaxy_costs(run).values()]
    stages = {}
    for stage in STAGES:
        here = [g["stages"][stage] for g in galaxies.values() if stage in g["stages"]]
        if not here:
            continue
        points = [
            (g["spaxels"], g["stages"][stage]["cpu_s"]) for g in [*galaxies.values(), *others] if stage in g["stages"]
        ]
        stages[stage] = {
            "wall_s": sum(s["wall_s"] for s in here),
            "cpu_s": sum(s["cpu_s"] for s in here),
            "max_rss_mb": max(s["max_rss_mb"] for s in here),
            "exponent": exponent(points),
        }
    every_job = [read_benchmark(f) for f in (args.run / "benchmarks").rglob("*.tsv")]
    pointings = [int(p) for p in args.pointings.split(",")]
    report(
        {
            "run": str(args.run),
            "galaxies": galaxies,
            "stages": stages,
            "dominant_stage": max((s for s in stages if s not in MOCK_ONLY_STAGES), key=lambda s: stages[s]["cpu_s"]),
            "max_peak_rss_mb": float(np.nanmax([r["max_rss_mb"] for r in every_job])),
            "n_spaxels": sum(g["spaxels"] for g in galaxies.values()),
            "n_bins": sum(g["bins"] for g in galaxies.values()),
            "sample": {
                "galaxies": len(pointings),
                "pointings": pointings,
                "spaxels": sum(pointings) * SPAXELS_PER_POINTING,
                "nodes": args.nodes,
                "cores_per_node": args.cores_per_node,
            },
            **project(
                galaxies,
                {s: v["exponent"] for s, v in stages.items()},
                [p * SPAXELS_PER_POINTING for p in pointings],
                args.nodes * args.cores_per_node,
            ),
        },
        args.save,
    )


if __name__ == "__main__":
    main()
