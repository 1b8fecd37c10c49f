"""The command line's shared argument types, and the ``filters`` subcommand (the HST throughputs)."""

from __future__ import annotations

import argparse
import json


def json_arg(text: str) -> dict:
    """An argument given as a JSON object (a config section, a sheet row)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _filters(args: argparse.Namespace) -> None:
    from .filters import write_filter_products

    write_filter_products(args.keys, args.table, args.check)


def add_commands(stages) -> None:
    """filters: the HST throughput table and its synthetic-photometry check."""
    filt = stages.add_parser("filters", help="HST throughput table and synthetic-photometry check")
    filt.add_argument("--keys", nargs="+", required=True, help="filter keys, e.g. wfc3-uvis_f275w")
    filt.add_argument("--table", required=True, help="FITS table of throughputs to write")
    filt.add_argument("--check", required=True, help="JSON of pivot wavelengths and AB-Vega offsets")
    filt.set_defaults(func=_filters)
