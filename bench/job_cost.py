"""One workflow job's cost under two versions of the code, side by side, printed as JSON.

Usage:
    python bench/job_cost.py --command "sfh-pipeline infer ... --out {out}" \
        --source old=/path/to/checkout@commit --source new=. [--repeat 2] [--save NAME]

The command (a job's shell command from a Snakemake log, its ``--out`` replaced by ``{out}``)
runs with ``python -m sfh_pipeline`` from each source tree in turn (``PYTHONPATH``), the trees
alternating ``--repeat`` times so that a drift of the machine's load hits both alike. For each
run: wall seconds and CPU seconds of the job's process (user + system, from ``wait4``), and
its peak RSS. ``speed_ratio`` is the first source's median CPU seconds over each other's. The
outputs are compared with the first source's: ``differing_columns`` lists the FITS table
columns that differ, with their largest absolute difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from provenance import report  # bench/provenance.py: this script's folder is on sys.path


def run_once(command: str, source: Path, out: Path) -> dict[str, float]:
    """Run the job once from ``source``; its wall and CPU seconds and peak RSS (MB)."""
    line = command.replace("{out}", str(out)).replace("sfh-pipeline ", f"{sys.executable} -m sfh_pipeline ", 1)
    env = {**os.environ, "PYTHONPATH": str(source)}
    started = time.perf_counter()
    process = subprocess.Popen(line, shell=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"job failed from {source}: {process.stderr.read().decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}


def differing_columns(a: Path, b: Path) -> dict[str, float]:
    """The FITS table columns that differ between two files, with their largest absolute
    difference (NaN equal to NaN; a NaN against a number counts as infinite)."""
    differences = {}
    with fits.open(a) as first, fits.open(b) as second:
        for hdu_a, hdu_b in zip(first, second, strict=True):
            if not isinstance(hdu_a, fits.BinTableHDU):
                continue
            for name in hdu_a.columns.names:
                x, y = np.asarray(hdu_a.data[name], float), np.asarray(hdu_b.data[name], float)
                if not np.array_equal(x, y, equal_nan=True):
                    gap = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
                    differences[name] = float(np.nan_to_num(gap, nan=np.inf).max())
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", required=True, help="the job's command, its output path as {out}")
    parser.add_argument("--source", action="append", required=True, help="NAME=SOURCE_TREE (twice or more)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--note", default="")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    sources = {name: Path(tree).resolve() for name, _, tree in (s.partition("=") for s in args.source)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory() as scratch:
        outputs = {name: Path(scratch) / f"{name}.fits" for name in sources}
        for _ in range(args.repeat):
            for name, tree in sources.items():
                runs[name].append(run_once(args.command, tree, outputs[name]))
        first = next(iter(sources))
        differing = {name: differing_columns(outputs[first], outputs[name]) for name in sources if name != first}
    median_cpu = {name: float(np.median([r["cpu_s"] for r in rs])) for name, rs in runs.items()}
    report(
        {
            "note": args.note,
            "command": args.command,
            "sources": {name: str(tree) for name, tree in sources.items()},
            "runs": runs,
            "median_cpu_s": median_cpu,
            "speed_ratio": {name: median_cpu[first] / median_cpu[name] for name in sources if name != first},
            "differing_columns": differing,
        },
        args.save,
    )


if __name__ == "__main__":
    main()
