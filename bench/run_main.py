"""``./run.sh main`` on a fresh clone of this commit, timed: the wall time of the whole run and of
each stage, the figure README.md quotes.

Usage:
    python bench/run_main.py [--venv .venv] [--keep DIR] [--save run_main]

The clone (``git clone`` of HEAD; uncommitted changes are not in it) reuses an installed
environment (``--venv``, through run.sh's ``SFH_VENV``; ``./run.sh env`` first, untimed, and the
environment's editable install given back to this checkout afterwards) and the download cache
(``~/.cache/sfh-pipeline``), as a user's second clone would: the time is the workflow's, not
pip's or the network's. Per stage: the summed wall time of its jobs (seconds, from the
``benchmarks/<stage>/`` files Snakemake writes; jobs of different stages overlap on several
cores, so the sums exceed the wall time) and the job count. The load average before and after
says whether the machine was quiet.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from provenance import report  # bench/provenance.py: this script's folder is on sys.path

REPO = Path(__file__).resolve().parents[1]


def stage_seconds(benchmarks: Path) -> dict[str, dict[str, float]]:
    """Per stage (first folder under ``benchmarks``): summed wall seconds (the ``s`` column of
    Snakemake's benchmark files) and number of jobs."""
    stages: dict[str, dict[str, float]] = defaultdict(lambda: {"seconds": 0.0, "jobs": 0})
    for path in sorted(benchmarks.rglob("*.tsv")):
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        stage = path.relative_to(benchmarks).parts[0]
        stages[stage]["seconds"] += sum(float(row["s"]) for row in rows)
        stages[stage]["jobs"] += 1
    return {k: {"seconds": round(v["seconds"], 1), "jobs": int(v["jobs"])} for k, v in sorted(stages.items())}


def package_folder(python: str) -> str:
    """Where ``python`` imports sfh_pipeline from (outside any checkout's folder)."""
    code = "import os, sfh_pipeline; print(os.path.dirname(sfh_pipeline.__file__))"
    return subprocess.run([python, "-c", code], cwd="/", capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(REPO / ".venv"), help="an installed environment to reuse")
    parser.add_argument("--keep", default=None, help="clone into this folder and keep it (default: a temporary one)")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(args.keep) if args.keep else Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        cloned = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True)
        env = {**os.environ, "SFH_VENV": str(Path(args.venv).resolve())}
        python = str(Path(args.venv).resolve() / "bin" / "python")
        home = package_folder(python)
        # untimed: an environment stamped for other requirements is reinstalled here, which also
        # points its editable sfh_pipeline at the clone
        subprocess.run(["./run.sh", "env"], cwd=clone, env=env, check=True)
        load_before = os.getloadavg()
        start = time.perf_counter()
        run = subprocess.run(["./run.sh", "main"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if package_folder(python) != home:  # give the environment back to the checkout it served
            subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", "-e", str(REPO)], check=True)
        if run.returncode:
            raise SystemExit(f"./run.sh main failed ({run.returncode}):\n{run.stderr[-3000:]}")
        figures = {
            "command": "./run.sh main",
            # the provenance's commit is the checkout's when the run ends; this is the one run
            "commit_run": cloned.stdout.strip(),
            "wall_s": round(wall, 1),
            "wall_min": round(wall / 60, 2),
            "stages": stage_seconds(clone / "benchmarks"),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
    report(figures, args.save)


if __name__ == "__main__":
    main()
