"""The subcommands of the training-set stage: ``trainset init``, ``chunk``, ``finalize``, ``qa``."""

from __future__ import annotations

import argparse
import logging

from ..core.cli import json_arg

log = logging.getLogger("sfh_pipeline")


def _trainset_init(args: argparse.Namespace) -> None:
    from .trainset import init_store, resolve_config

    config = resolve_config(args.config)
    attrs = init_store(args.store, config, args.ssp, args.filters)
    from ..core.atomic import write_json_atomically

    layout = {k: attrs[k] for k in ("n_spectra", "chunk_size", "generator_digest", "filters", "ssp")}
    write_json_atomically(args.layout, {"store": args.store, **layout})


def _trainset_chunk(args: argparse.Namespace) -> None:
    from .trainset import write_chunk

    info = write_chunk(args.store, args.index, args.ssp, args.marker)
    log.info("wrote chunk %d (samples %d-%d) of %s", info["chunk"], info["start"], info["stop"] - 1, args.store)


def _trainset_finalize(args: argparse.Namespace) -> None:
    from .trainset import finalize

    summary = finalize(args.store, args.markers, args.report)
    log.info("training set %s complete: %s", args.store, summary["split_counts"])


def _trainset_qa(args: argparse.Namespace) -> None:
    from .qa import plot_trainset_prior

    plot_trainset_prior(args.store, args.output)


def add_commands(stages) -> None:
    """trainset (init, chunk, finalize, qa)."""
    trainset = stages.add_parser("trainset", help="synthetic training set stage").add_subparsers(
        dest="step", required=True
    )
    init = trainset.add_parser("init", help="create (or grow) the training-set store")
    init.add_argument("--config", type=json_arg, required=True, help="trainset section of the config, as JSON")
    init.add_argument("--store", required=True)
    init.add_argument("--ssp", required=True, help="standard SSP store")
    init.add_argument("--filters", nargs="+", required=True)
    init.add_argument("--layout", required=True, help="JSON summary written last")
    init.set_defaults(func=_trainset_init)
    chunk = trainset.add_parser("chunk", help="generate one chunk into the store")
    chunk.add_argument("--store", required=True)
    chunk.add_argument("--index", type=int, required=True)
    chunk.add_argument("--ssp", required=True)
    chunk.add_argument("--marker", required=True, help="chunk marker JSON written last")
    chunk.set_defaults(func=_trainset_chunk)
    fin = trainset.add_parser("finalize", help="check completeness and write the split")
    fin.add_argument("--store", required=True)
    fin.add_argument("--markers", nargs="+", required=True)
    fin.add_argument("--report", required=True)
    fin.set_defaults(func=_trainset_finalize)
    tqa = trainset.add_parser("qa", help="figure of the prior")
    tqa.add_argument("--store", required=True)
    tqa.add_argument("--output", required=True)
    tqa.set_defaults(func=_trainset_qa)
