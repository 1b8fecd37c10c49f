"""Hundreds of jobs of one rule through profiles/slurm on a real one-node SLURM cluster: one by
one (the profile) against as job arrays (``--slurm-array-jobs``), with more ready jobs than
``--jobs``, the case of a PHANGS galaxy's hundreds of tiles.

Usage (as root, on a machine without its own SLURM; slurm-wlm and munge are installed if missing):
    python bench/slurm_arrays.py [--tasks 200] [--jobs 100] [--array-timeout 300] [--save slurm_arrays]

Prints JSON: for each mode the tasks finished, the sbatch calls the controller received, the
wall time and whether Snakemake ended by itself (``returncode`` null: stopped at the timeout).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.provenance import report  # noqa: E402
from tests.support.slurm_arrays import run_tiny_jobs  # noqa: E402
from tests.support.slurm_cluster import slurm_cluster  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=100, help="Snakemake --jobs (the profile's value)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to the one-by-one run")
    parser.add_argument("--array-timeout", type=float, default=300, help="seconds allowed to the array run")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, slurm_cluster(Path(tmp) / "cluster") as cluster:
        modes = {}
        for name, arrays, timeout in (("single", False, args.timeout), ("arrays", True, args.array_timeout)):
            result = run_tiny_jobs(cluster, Path(tmp) / name, args.tasks, args.jobs, arrays, timeout)
            result.pop("log")
            modes[name] = {**result, "wall_s": round(result["wall_s"], 1)}
    report(
        {
            "tasks": args.tasks,
            "jobs": args.jobs,
            "snakemake": version("snakemake"),
            "snakemake_executor_plugin_slurm": version("snakemake-executor-plugin-slurm"),
            **modes,
        },
        args.save,
    )


if __name__ == "__main__":
    main()
