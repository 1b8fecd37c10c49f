"""Where a benchmark figure comes from: commit, date, host; and where its JSON is kept."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def stamp() -> dict[str, object]:
    """Commit (with ``+dirty`` for uncommitted changes), UTC date, host name, CPU model and count."""
    repo = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "--short", "HEAD") + (
        "+dirty" if git("status", "--porcelain", "--untracked-files=no") else ""
    )
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), platform.processor())
    return {
        "commit": commit,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def report(figures: dict, save_as: str | None = None) -> dict:
    """Print the figures with their provenance as JSON; with ``save_as``, also write them to
    ``bench/results/<save_as>.json``."""
    out = {**figures, "provenance": stamp()}
    text = json.dumps(out, indent=2)
    print(text)
    if save_as:
        (RESULTS / f"{save_as}.json").write_text(text + "\n")
    return out
