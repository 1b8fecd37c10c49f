"""The ``sfh-pipeline`` command: one subcommand per workflow stage, called by the rules."""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    """The root parser; each layer folder's ``cli.py`` adds the subcommands of its stages."""
    from .core import cli as core
    from .galaxy import cli as galaxy
    from .ml import cli as ml
    from .ssp import cli as ssp
    from .synth import cli as synth

    parser = argparse.ArgumentParser(prog="sfh-pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    stages = parser.add_subparsers(dest="stage", required=True)
    for folder in (ssp, core, synth, ml, galaxy):  # the order of the subcommands in --help
        folder.add_commands(stages)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; known failures print one clear line and exit 1 (no traceback)."""
    from .galaxy.phangs import DataError
    from .ssp import SSPError
    from .ssp.fetch import FetchError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        args.func(args)
    except (FetchError, SSPError, DataError, ValueError, FileNotFoundError) as err:
        print(f"sfh-pipeline {args.stage}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
