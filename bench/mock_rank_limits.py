"""How far the Spearman rho of a mock galaxy's maps can go: for each summary quantity of
``<galaxy>_vs_truth.json`` files, the measured rho, the rho that the truth's spread over bins
and the scatter of recovered - true allow (``maps.expected_spearman_rho``), and the scatter a
rho goal would need on the same bins. Prints JSON; ``--save NAME`` keeps it in bench/results.

    python bench/mock_rank_limits.py --compare demo=results/MOCK-UVIS/maps/MOCK-UVIS_vs_truth.json ... \\
        [--goal lw_age=0.93 mw_age=0.8] [--save mock_rank_limits]
"""

from __future__ import annotations

import argparse
import json

from provenance import report  # bench/provenance.py: this script's folder is on sys.path
from scipy.optimize import brentq

from sfh_pipeline.maps import expected_spearman_rho

KEYS = ("lw_age", "mw_age", "lw_logz", "mw_logz")


def scatter_for_rho(spread_dex: float, rho: float) -> float:
    """The scatter (dex) at which :func:`expected_spearman_rho` of ``spread_dex`` equals ``rho``."""
    return float(brentq(lambda scatter: expected_spearman_rho(spread_dex, scatter) - rho, 1e-6, 100 * spread_dex))


def limits(comparison: dict, goals: dict[str, float]) -> dict:
    out = {}
    for key in KEYS:
        entry = comparison[key]
        out[key] = {
            name: entry[name]
            for name in ("spearman_rho", "spearman_rho_expected", "true_spread_dex", "scatter_dex", "bias_dex", "n")
        }
        if key in goals:
            out[key]["goal_rho"] = goals[key]
            out[key]["scatter_for_goal_dex"] = scatter_for_rho(entry["true_spread_dex"], goals[key])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", nargs="+", required=True, help="label=<galaxy>_vs_truth.json")
    parser.add_argument("--goal", nargs="*", default=["lw_age=0.93", "mw_age=0.8"], help="quantity=rho")
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    goals = {key: float(value) for key, value in (g.split("=", 1) for g in args.goal)}
    figures = {}
    for item in args.compare:
        label, path = item.split("=", 1)
        with open(path) as handle:
            figures[label] = limits(json.load(handle), goals)
    report({"goals": goals, "comparisons": figures}, args.save)


if __name__ == "__main__":
    main()
