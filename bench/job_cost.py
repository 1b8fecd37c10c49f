"""One workflow job's cost under two versions of the code, side by side, printed as JSON.

Usage:
    python bench/job_cost.py --command "sfh-pipeline infer ... --out {out}/tile.fits" \
        --source old=/path/to/checkout@commit --source new=. [--repeat 2] [--save NAME]

The command (a job's shell command from a Snakemake log, its output paths put into a folder
``{out}``, e.g. ``--out {out}/tile.fits``) runs with ``python -P -m sfh_pipeline`` from each
source tree in turn (``PYTHONPATH``), the trees alternating ``--repeat`` times so that a drift
of the machine's load hits both alike. For each run: wall seconds and CPU seconds of the job's
process (user + system, from ``wait4``), and its peak RSS. ``speed_ratio`` is the first
source's median CPU seconds over each other's. The outputs are compared with the first
source's: ``differing`` lists the FITS HDUs (and table columns) that differ, with their
largest absolute difference.
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
    """Run the job once from ``source``, ``{out}`` standing for ``out``; its wall and CPU
    seconds and peak RSS (MB)."""
    # -P: the current folder (often a checkout) must not shadow the source tree on PYTHONPATH
    line = command.replace("{out}", str(out)).replace("sfh-pipeline ", f"{sys.executable} -P -m sfh_pipeline ", 1)
    env = {**os.environ, "PYTHONPATH": str(source)}
    started = time.perf_counter()
    process = subprocess.Popen(line, shell=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"job failed from {source}: {process.stderr.read().decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "max_rss_mb": usage.ru_maxrss / 1024}


def differences(a: Path, b: Path) -> dict[str, float]:
    """What differs between the FITS files of two output folders: per file and HDU (and table
    column), the largest absolute difference (NaN equal to NaN; NaN against a number counts as
    infinite). Equal outputs give an empty dict."""

    def gap(x: np.ndarray, y: np.ndarray) -> float:
        x, y = np.asarray(x, float), np.asarray(y, float)
        if x.shape != y.shape:
            return float("inf")
        if np.array_equal(x, y, equal_nan=True):
            return 0.0
        return float(np.nan_to_num(np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y)), nan=np.inf).max())

    found = {}
    for path in sorted(a.rglob("*.fits")):
        with fits.open(path) as first, fits.open(b / path.relative_to(a)) as second:
            for index, (hdu_a, hdu_b) in enumerate(zip(first, second, strict=True)):
                where = f"{path.relative_to(a)}[{hdu_a.name or index}]"
                if isinstance(hdu_a, fits.BinTableHDU):
                    found.update({f"{where}.{c}": gap(hdu_a.data[c], hdu_b.data[c]) for c in hdu_a.columns.names})
                elif hdu_a.data is not None:
                    found[where] = gap(hdu_a.data, hdu_b.data)
    return {k: v for k, v in found.items() if v != 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", required=True, help="the job's command, {out} standing for an output folder")
    parser.add_argument("--source", action="append", required=True, help="NAME=SOURCE_TREE (twice or more)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--note", default="")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    sources = {name: Path(tree).resolve() for name, _, tree in (s.partition("=") for s in args.source)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: Path(scratch) / name for name in sources}
        for _ in range(args.repeat):
            for name, tree in sources.items():
                folders[name].mkdir(exist_ok=True)
                runs[name].append(run_once(args.command, tree, folders[name]))
        first = next(iter(sources))
        differing = {name: differences(folders[first], folders[name]) for name in sources if name != first}
    median_cpu = {name: float(np.median([r["cpu_s"] for r in rs])) for name, rs in runs.items()}
    report(
        {
            "note": args.note,
            "command": args.command,
            "sources": {name: str(tree) for name, tree in sources.items()},
            "runs": runs,
            "median_cpu_s": median_cpu,
            "speed_ratio": {name: median_cpu[first] / median_cpu[name] for name in sources if name != first},
            "differing": differing,
        },
        args.save,
    )


if __name__ == "__main__":
    main()
