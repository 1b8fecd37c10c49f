"""The subcommands of the galaxy stages: ``mock``, ``observe``, ``infer``, ``maps``, ``validate``,
``validate-spectra``, ``validate-summary``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.cli import json_arg

log = logging.getLogger("sfh_pipeline")


def _galaxy_row(args: argparse.Namespace) -> dict:
    """The galaxy's sheet row handed over by the rule (empty cells as NaN)."""
    from ..core.samples import row_from_record

    return row_from_record(args.row)


def _galaxy_files(args: argparse.Namespace) -> tuple[dict, dict]:
    """The galaxy's sheet row and input files (muse_cube, <band>_sci, <band>_wht)."""
    files = {"muse_cube": Path(args.cube)}
    for band, (sci, wht) in args.hst_images.items():
        files[f"{band}_sci"], files[f"{band}_wht"] = Path(sci), Path(wht)
    return _galaxy_row(args), files


def _hst_bands(row: dict, files: dict) -> dict:
    from ..core.samples import hst_band_keys

    return {key: (files[f"{key}_sci"], files[f"{key}_wht"]) for key in hst_band_keys(row)}


def _mock(args: argparse.Namespace) -> None:
    from ..core.samples import hst_band_keys
    from ..synth.mock import write_mock_galaxy

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
    from .observe import hst_on_muse

    row, files = _galaxy_files(args)
    coverage = hst_on_muse(
        files["muse_cube"], _hst_bands(row, files), float(row["muse_psf_fwhm_arcsec"]), args.hst_psf_fwhm, args.out
    )
    log.info("%s: HST coverage of the MUSE field per band: %s", args.galaxy, coverage)


def _observe_bins(args: argparse.Namespace) -> None:
    from ..core.samples import require_columns
    from .observe import bin_galaxy

    row, files = _galaxy_files(args)
    (v_sys,) = require_columns(row, ("systemic_velocity_kms",))
    summary = bin_galaxy(files["muse_cube"], v_sys, args.settings, args.bins, args.tiles)
    log.info("%s: %s", args.galaxy, summary)


def _infer(args: argparse.Namespace) -> None:
    from .infer import infer_tile

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
    from .spectra_validation import validate_spectra

    result = validate_spectra(
        args.spectra,
        args.ssp,
        _verified_model(args),
        args.settings,
        args.out_dir,
        _second_reference(args),
        args.processes,
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
    from .validate import validate_galaxy

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
    from ..core.atomic import write_json_atomically
    from .validate import real_data_summary

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
    from .atlas import quicklook
    from .maps import assemble_maps

    summary = assemble_maps(args.bins, args.tables, _galaxy_row(args), _verified_model(args), args.out)
    quicklook(args.out, args.png)
    log.info("%s: %s", args.galaxy, summary)


def _maps_compare(args: argparse.Namespace) -> None:
    from ..core.atomic import write_json_atomically
    from .maps import compare_with_truth

    result = compare_with_truth(args.maps, args.truth, args.bins, _galaxy_row(args))
    write_json_atomically(args.out, result)
    log.info(
        "%s against truth: lw_age rho %.3f, median |d| %.3f dex",
        args.galaxy,
        result["lw_age"]["spearman_rho"],
        result["lw_age"]["median_abs_dex"],
    )


def _maps_mosaic(args: argparse.Namespace) -> None:
    from .atlas import quicklook
    from .maps import mosaic_maps

    summary = mosaic_maps(args.maps, args.out, args.galaxy)
    quicklook(args.out, args.png)
    log.info("%s: %s", args.galaxy, summary)


def _maps_atlas(args: argparse.Namespace) -> None:
    from .atlas import sample_atlas

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
        type=json_arg,
        default=None,
        help='{"label": ..., "settings": {...}} of the second library, as JSON',
    )
    parser.add_argument("--settings", type=json_arg, required=True, help="validate section of the config, as JSON")


def _second_reference(args: argparse.Namespace) -> dict | None:
    if not args.second_ssp:
        return None
    return {"ssp_store": args.second_ssp, **(args.second_reference or {})}


def _verified_model(args: argparse.Namespace) -> str:
    """The model file of the arguments, checked against ``--model-sha256`` when given."""
    if args.model_sha256:
        from ..ml.predict import verify_model_file

        verify_model_file(args.model, args.model_sha256)
    return args.model


def _add_galaxy_args(parser: argparse.ArgumentParser, data: bool = True) -> None:
    parser.add_argument("--galaxy", required=True)
    parser.add_argument("--row", type=json_arg, required=True, help="the galaxy's sample-sheet row, as JSON")
    if data:
        parser.add_argument("--cube", required=True, help="MUSE cube")
        parser.add_argument(
            "--hst-images",
            type=json_arg,
            default={},
            help='HST images per band, {"<instrument>_<filter>": ["<sci>", "<wht>"]}, as JSON',
        )


def add_commands(stages) -> None:
    """mock, observe (hst, bins), infer, maps (assemble, compare, mosaic, atlas), validate, validate-spectra."""
    mock = stages.add_parser("mock", help="write a mock galaxy in the PHANGS file layouts, and its truth")
    _add_galaxy_args(mock)
    mock.add_argument("--recipe", type=json_arg, required=True, help="the galaxy's mock recipe, as JSON")
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
    bins.add_argument("--settings", type=json_arg, required=True, help="observe section of the config, as JSON")
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
    inf.add_argument("--settings", type=json_arg, required=True, help="infer settings, as JSON")
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
        type=json_arg,
        required=True,
        help='{"<name>": {"file": <SDSS spectrum or file of MaNGA spaxels>, "row": <spaxel>, "ebv_galactic": <mag>},'
        " ...} as JSON",
    )
    _add_model_args(spectra)
    _add_reference_args(spectra)
    spectra.add_argument("--processes", type=int, default=1, help="spectra fitted in parallel")
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
