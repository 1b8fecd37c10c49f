"""The subcommands of the network: ``train``, ``export-checkpoint``, ``combine-ensemble``, ``evaluate``,
``ship-model``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.cli import json_arg

log = logging.getLogger("sfh_pipeline")


def _train(args: argparse.Namespace) -> None:
    from .model import LossWeights, ModelConfig
    from .training import TrainConfig, train

    settings = args.config
    train(
        args.trainset,
        args.out,
        ModelConfig.from_dict(settings.get("architecture") or {}),
        TrainConfig.from_dict(settings.get("training") or {}),
        LossWeights(**(settings.get("loss") or {})),
        model_name=args.name,
    )


def _export_checkpoint(args: argparse.Namespace) -> None:
    from .training import export_checkpoint

    payload = export_checkpoint(args.checkpoint, args.trainset, args.out)
    print(f"{args.out}: best of {payload['epochs_run']} epochs, validation loss {payload['best_validation_loss']:.4f}")


def _combine_ensemble(args: argparse.Namespace) -> None:
    from .training import combine_ensemble

    payload = combine_ensemble(args.members, args.trainset, args.out, name=args.name)
    calibration = payload["calibration"]
    log.info(
        "%s: %d members calibrated on %d validation spectra: %s",
        args.out,
        len(payload["members"]),
        calibration["n_validation"],
        ", ".join(
            f"{key} from {entry['source'].replace('_', ' ')}, error scale {entry['error_scale']:.3f}"
            for key, entry in calibration["summaries"].items()
        ),
    )


def _ship_model(args: argparse.Namespace) -> None:
    from .model_card import ship_model

    entry = ship_model(
        args.model,
        args.metrics,
        args.models_dir,
        args.name,
        mock_comparisons=args.mocks,
        validations=args.validations,
        commands=args.command,
        notes=Path(args.notes).read_text() if args.notes else "",
        trainset=args.trainset,
        members=args.members,
        member_metrics=args.member_metrics,
    )
    log.info("shipped %s: %s (sha256 %s)", args.name, entry["path"], entry["sha256"])


def _evaluate(args: argparse.Namespace) -> None:
    from ..core.products import SUMMARY_KEYS
    from .evaluation import evaluate_model

    metrics = evaluate_model(args.model, args.trainset, args.out)
    log.info(
        "test split (%d spectra): %s",
        metrics["n_test"],
        ", ".join(
            f"{k} bias {metrics[k]['bias_dex']:+.3f} scatter {metrics[k]['scatter_dex']:.3f} dex" for k in SUMMARY_KEYS
        ),
    )


def add_commands(stages) -> None:
    """train, export-checkpoint, combine-ensemble, evaluate, ship-model."""
    tr = stages.add_parser("train", help="train (or resume training) the network")
    tr.add_argument("--trainset", required=True, help="finalized training-set store")
    tr.add_argument("--out", required=True, help="model folder: model.pt, history, checkpoints/")
    tr.add_argument("--config", type=json_arg, required=True, help="model section of the config, as JSON")
    tr.add_argument("--name", required=True)
    tr.set_defaults(func=_train)
    export = stages.add_parser(
        "export-checkpoint", help="model file of a training under way: the best weights of its checkpoint so far"
    )
    export.add_argument("--checkpoint", required=True, help="<model folder>/checkpoints/last.pt")
    export.add_argument("--trainset", required=True, help="the training set it is trained on")
    export.add_argument("--out", required=True, help="model file to write")
    export.set_defaults(func=_export_checkpoint)
    combine = stages.add_parser(
        "combine-ensemble",
        help="one ensemble file of model files of one training set, its combination calibrated on the validation split",
    )
    combine.add_argument("--members", nargs="+", required=True, help="model.pt of each member")
    combine.add_argument("--trainset", required=True, help="the training set the members were trained on")
    combine.add_argument("--out", required=True, help="ensemble file to write")
    combine.add_argument("--name", default=None, help="the ensemble's name (default: the folder of --out)")
    combine.set_defaults(func=_combine_ensemble)
    ev = stages.add_parser("evaluate", help="metrics and figures on the test split")
    ev.add_argument("--model", required=True, help="model.pt (a model or an ensemble file)")
    ev.add_argument("--trainset", required=True)
    ev.add_argument("--out", required=True, help="folder for metrics.json and the figures")
    ev.set_defaults(func=_evaluate)
    ship = stages.add_parser(
        "ship-model", help="copy a trained, evaluated model into models/<name>/ with a model card, and catalog it"
    )
    ship.add_argument("--model", required=True, help="model.pt of the train stage")
    ship.add_argument("--metrics", required=True, help="metrics.json of the evaluate stage")
    ship.add_argument("--name", required=True, help="catalog name (model.pretrained: <name>)")
    ship.add_argument("--models-dir", default="models", help="the project's models/ folder, holding catalog.yaml")
    ship.add_argument("--mocks", nargs="*", default=[], help="<galaxy>_vs_truth.json of mock galaxies")
    ship.add_argument(
        "--validations", nargs="*", default=[], help="agreement.json of real galaxies, and the validation summary.json"
    )
    ship.add_argument("--command", action="append", default=[], help="a command that made the files (repeatable)")
    ship.add_argument("--notes", default="", help="a Markdown file of notes for the card")
    ship.add_argument("--trainset", default=None, help="the model's training set: check spectra for the tests")
    ship.add_argument(
        "--members", nargs="*", default=[], help="an ensemble's member files, in its order (default: those it records)"
    )
    ship.add_argument(
        "--member-metrics", nargs="*", default=[], help="metrics.json of each member's own evaluation, in its order"
    )
    ship.set_defaults(func=_ship_model)
