"""Which real-data goal misses are a recipe's and which one training's: every goal figure of
several trainings side by side, read from their validate stages' ``summary.json``.

Usage:
    python bench/goal_spread.py --run LABEL=DIR [--run ...] [--recipe NAME=LABEL,LABEL,...]
        [--save NAME]

``DIR`` holds a ``summary.json`` of ``sfh-pipeline validate-summary`` (every real spectrum and
bin: the network's values and errors, the BC03 reference's, the envelope). For each run, the
figures the real-data goals are written on (network - reference, dex): per quantity the median
difference in every set, the scatter (1.4826 MAD), the share within the 1-sigma of network and
reference in quadrature, Spearman's rho and the share within the envelope over all of them, and
the largest |difference| in LW age among the young spectra (reference LW log age < 9.2). For
each ``--recipe`` (trainings of one recipe that differ only in their seed or epoch), the lowest
and highest value of every figure over its runs: a goal missed by every run of a recipe by more
than that range is the recipe's miss; one inside the range depends on the training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from provenance import report  # bench/provenance.py: this script's folder is on sys.path

from sfh_pipeline.galaxy.validate import QUANTITIES as ALL_QUANTITIES
from sfh_pipeline.galaxy.validate import YOUNG_LW_AGE, agreement, envelope_coverage

#: the quantities the real-data goals are written on
QUANTITIES = ("lw_age", "lw_logz")


def goal_figures(summary: dict) -> dict:
    """The goal figures of one ``summary.json``, recomputed from its rows (dex, shares 0-1)."""
    rows = summary["rows"]

    def column(part: str, key: str, subset: str | None = None) -> np.ndarray:
        return np.array([r[part][key] for r in rows if subset is None or r["set"] == subset], float)

    keys = [*ALL_QUANTITIES, *(f"{k}_err" for k in ALL_QUANTITIES)]
    network = {k: column("network", k) for k in keys}
    whole = agreement(network, {k: column("reference", k) for k in keys}, young=False)
    bounds = {
        k: tuple(np.array([r["envelope"][k][end] for r in rows], float) for end in (0, 1)) for k in ALL_QUANTITIES
    }
    inside = envelope_coverage(network, bounds)
    figures: dict = {}
    for key in QUANTITIES:
        figures[key] = {
            **{
                f"median_delta_dex_{name}": round(
                    float(np.median(column("network", key, name) - column("reference", key, name))), 3
                )
                for name in summary["sets"]
            },
            "scatter_dex": round(whole[key]["scatter_dex"], 3),
            "within_1sigma": round(whole[key]["pull_within_1sigma"], 2),
            "spearman_rho": round(whole[key]["spearman_rho"], 2),
            "within_envelope": round(inside[key]["within_envelope"], 2),
        }
    young = np.flatnonzero(column("reference", "lw_age") < YOUNG_LW_AGE)
    delta = network["lw_age"][young] - column("reference", "lw_age")[young]
    worst = int(np.argmax(np.abs(delta)))
    figures["young_max_abs_delta_lw_age_dex"] = round(float(abs(delta[worst])), 2)
    figures["young_worst"] = rows[young[worst]]["name"]
    return figures


def ranges(runs: dict[str, dict], labels: list[str]) -> dict:
    """Lowest and highest value of every numeric figure over the runs ``labels``."""
    out: dict = {}
    for key in QUANTITIES:
        out[key] = {}
        for figure in runs[labels[0]][key]:
            values = [runs[label][key][figure] for label in labels]
            out[key][figure] = [min(values), max(values)]
    values = [runs[label]["young_max_abs_delta_lw_age_dex"] for label in labels]
    out["young_max_abs_delta_lw_age_dex"] = [min(values), max(values)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="LABEL=DIR holding a summary.json")
    parser.add_argument("--recipe", action="append", default=[], help="NAME=LABEL,LABEL,... (runs of one recipe)")
    parser.add_argument("--save", default=None, help="also write bench/results/<name>.json")
    args = parser.parse_args()
    if any("=" not in item for item in args.run + args.recipe):
        parser.error("--run takes LABEL=DIR and --recipe NAME=LABEL,LABEL,...")
    paths = dict(item.split("=", 1) for item in args.run)
    missing = [str(Path(d) / "summary.json") for d in paths.values() if not (Path(d) / "summary.json").is_file()]
    if missing:
        parser.error(f"no summary.json of a validate stage (sfh-pipeline validate-summary) at {', '.join(missing)}")
    recipes = {name: labels.split(",") for name, labels in (item.split("=", 1) for item in args.recipe)}
    unknown = sorted({label for labels in recipes.values() for label in labels} - set(paths))
    if unknown:
        parser.error(f"--recipe names runs not given with --run: {', '.join(unknown)}")
    runs = {label: goal_figures(json.loads((Path(d) / "summary.json").read_text())) for label, d in paths.items()}
    report(
        {
            "summaries": paths,
            "runs": runs,
            "recipes": {name: {"runs": labels, "range": ranges(runs, labels)} for name, labels in recipes.items()},
        },
        args.save,
    )


if __name__ == "__main__":
    main()
