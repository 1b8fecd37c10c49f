# Configuration and sample-sheet validation, and the path helpers every stage uses.
import json
import os
import re
import shlex
import sys

import yaml

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from sfh_pipeline import samples
from sfh_pipeline.fetch import source_filename
from sfh_pipeline.predict import verify_model_file
from sfh_pipeline.trainset import config_digest, generator_config, resolve_config

validate(config, "../schemas/config.schema.yaml")

# Rules call `sfh-pipeline`: bin/sfh-pipeline runs the package of this checkout with the
# interpreter that runs Snakemake (whatever PATH says), or with a rule's conda environment's.
_uses_conda = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
shell.prefix(
    f'export PATH="{workflow.basedir}/bin:$PATH" PYTHONPATH="{workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"'
    + ("" if _uses_conda else f" SFH_PYTHON={shlex.quote(sys.executable)}")
    + "; "
)
SFH_ENV = os.path.join(workflow.basedir, "envs", "sfh-pipeline.yaml")

SSP_NAME = config["ssp"]["name"]
# An optional second library, a second reference of the validate stage only (library systematics).
SECOND_SSP = (config.get("validate") or {}).get("second_ssp")
SSP_LIBRARIES = {SSP_NAME: config["ssp"]}
if SECOND_SSP:
    if SECOND_SSP["name"] == SSP_NAME:
        raise ValueError(
            f"validate.second_ssp.name is {SSP_NAME!r}, the name of the training library (ssp.name): "
            "give the second reference library a name of its own (its store is resources/ssp/<name>.zarr)"
        )
    SSP_LIBRARIES[SECOND_SSP["name"]] = SECOND_SSP
FILTER_TABLE = "resources/filters/hst_throughputs.fits"
FILTER_CHECK = "results/qa/filters_check.json"


def ssp_store(name):
    """Standard SSP store of library `name`."""
    return f"resources/ssp/{name}.zarr"


def ssp_download(name):
    """Fetched file of SSP library `name` (its base name comes from the source entry)."""
    return f"resources/downloads/ssp/{name}/{source_filename(SSP_LIBRARIES[name]['source'])}"


def workflow_path(path):
    """`path` as given if it exists (relative to the working directory), else inside the workflow."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(workflow.basedir, path)


TRAINSET_NAME = config["trainset"]["name"]
TRAINSET = resolve_config({k: v for k, v in config["trainset"].items() if k != "name"})
TRAINSET_DIGEST = config_digest(TRAINSET)
# What the init job is given: settings added later are left out at their default, as in the
# digest, so that adding one does not make Snakemake remake the sets made before it.
TRAINSET_SETTINGS = {**generator_config(TRAINSET), "n_spectra": TRAINSET["n_spectra"]}


def trainset_dir(name):
    """Folder of training set `name`: its zarr store, chunk markers and layout."""
    return f"resources/trainsets/{name}"


def trainset_store(name):
    return f"{trainset_dir(name)}/trainset.zarr"


def trainset_report(name):
    """Completeness report written once every chunk is in; the set is usable after it."""
    return f"{trainset_dir(name)}/trainset.json"


def trainset_layout(name):
    """Written by trainset_init once the store exists with the configured size."""
    return f"{trainset_dir(name)}/layout.json"


def trainset_marker(name, chunk):
    """Written last by the job of chunk `chunk` (a zero-padded index)."""
    return f"{trainset_dir(name)}/chunks/{chunk}.json"


def trainset_markers(name):
    n_chunks = TRAINSET["n_spectra"] // TRAINSET["chunk_size"]
    return [trainset_marker(name, f"{i:05d}") for i in range(n_chunks)]


MODEL_NAME = config["model"]["name"]


def model_dir(name):
    """Folder of model `name`: model.pt, history, learning curves, metrics and checkpoints/."""
    return f"results/models/{name}"


def model_file(name, filename):
    return f"{model_dir(name)}/{filename}"


# An ensemble (model.ensemble): one training per seed, the same recipe otherwise.
ENSEMBLE = config["model"].get("ensemble")


def member_dir(name, seed):
    """Folder of one ensemble member's training: model.pt, history, checkpoints/."""
    return f"{model_dir(name)}/members/{seed}"


def member_file(name, seed, filename):
    return f"{member_dir(name, seed)}/{filename}"


def member_settings(seed):
    """The model section for the member of ``seed``: its seed, and the committed checkpoint it
    continues from when its folder has none."""
    settings = {k: v for k, v in config["model"].items() if k not in ("name", "ensemble")}
    training = dict(settings.get("training") or {}, seed=int(seed))
    if ENSEMBLE.get("checkpoints"):
        training["resume_from"] = workflow_path(f"{ENSEMBLE['checkpoints']}/{seed}/last.pt")
    return dict(settings, training=training)


def pretrained_model(entry):
    """{path, sha256} of model.pretrained: the name of a committed model in models/catalog.yaml,
    or an explicit {path, sha256}; None when the workflow trains its own. Snakemake's --config
    hands values inside a mapping over as strings: 'null' and '' mean null."""
    if not entry or entry in ("null", "None", "~"):
        return None
    if isinstance(entry, str):
        catalog_path = os.path.join(workflow.basedir, "models", "catalog.yaml")
        with open(catalog_path) as handle:
            catalog = yaml.safe_load(handle)
        if entry not in catalog:
            raise ValueError(f"model.pretrained: {entry!r} is not in {catalog_path}; it has {sorted(catalog)}")
        return {
            "path": os.path.join(workflow.basedir, "models", catalog[entry]["path"]),
            "sha256": catalog[entry]["sha256"],
        }
    return {"path": workflow_path(entry["path"]), "sha256": entry["sha256"]}


PRETRAINED = pretrained_model(config["model"].get("pretrained"))
if PRETRAINED:
    # checked once here, so that a wrong file stops the run before any job, and again by every job that loads it
    verify_model_file(PRETRAINED["path"], PRETRAINED["sha256"])
# The model file the galaxies are inferred with, and the argument that makes each job verify it.
MODEL_PT = PRETRAINED["path"] if PRETRAINED else model_file(MODEL_NAME, "model.pt")
MODEL_SHA256_ARG = f"--model-sha256 {PRETRAINED['sha256']}" if PRETRAINED else ""


def trained_model_pattern(pretrained):
    """Wildcard pattern of the model names the training rules may write: never the folder of a
    pretrained file that lies in results/models/ (a model trained here, or one of an ensemble's
    members), which Snakemake would otherwise delete and retrain when the settings differ."""
    if pretrained:
        relative = os.path.relpath(os.path.abspath(pretrained["path"]), os.path.abspath(model_dir("")))
        if not relative.startswith(".."):
            return rf"(?!{re.escape(relative.split(os.sep)[0])}(?:/|$))[^/]+"
    return r"[^/]+"


TRAINED_MODEL = trained_model_pattern(PRETRAINED)


def memory_mb(base_mb):
    """Memory request that grows with the attempt: a job killed for exceeding it is retried
    (restart-times in the profiles) with twice, then three times as much."""
    return lambda wildcards, attempt: base_mb * attempt


def shell_json(value):
    """A config entry as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def galaxy_file(galaxy, stage, filename):
    """Product `filename` of stage `stage` (observe, tiles, maps) of `galaxy`."""
    return f"results/{galaxy}/{stage}/{filename}"


def maps_file(galaxy):
    """The per-galaxy maps (docs/contracts.md, "Maps of a galaxy")."""
    return galaxy_file(galaxy, "maps", f"{galaxy}_maps.fits")


def second_reference_args(input):
    """Command-line arguments of the validate stages for the second reference library (or none)."""
    if not SECOND_SSP:
        return ""
    settings = {"label": SECOND_SSP["label"], "settings": SECOND_SSP.get("settings", {})}
    return f"--second-ssp {shlex.quote(input.second_ssp)} --second-reference {shell_json(settings)}"


def validation_file(galaxy, filename):
    """Product of the validate stage (docs/contracts.md: agreement.json)."""
    return f"results/validation/{galaxy}/{filename}"


# all real bins and spectra together (validate-summary)
VALIDATION_SUMMARY = "results/validation/summary.json"


def mock_truth(galaxy):
    return f"resources/mock/{galaxy}/truth.fits"


def galaxy_inputs(galaxy):
    """The MUSE cube and HST images of `galaxy` as named inputs."""
    files = samples.galaxy_input_files(SAMPLE.loc[galaxy], config["sample"]["muse_dir"], config["sample"]["hst_dir"])
    return {key: str(path) for key, path in files.items()}


def observe_settings(galaxy):
    """Binning settings of `galaxy`: the config's, with the sheet's target_snr if it has one."""
    settings = {**config["observe"], "tile_spaxels": config["infer"]["tile_spaxels"]}
    own = SAMPLE.loc[galaxy].get("target_snr") if "target_snr" in SAMPLE.columns else None
    if own is not None and own == own:  # not NaN
        settings["target_snr"] = float(own)
    return settings


def galaxy_args(galaxy, data=True, columns=None):
    """CLI arguments handing a job its galaxy: the sheet row (or its `columns`), as a param so
    that editing it reruns this galaxy's jobs (and no others), and with `data` the paths of its
    MUSE cube and HST images."""
    row = SAMPLE.loc[galaxy]
    args = f"--galaxy {shlex.quote(galaxy)} --row {shell_json(samples.row_record(row, columns))}"
    if data:
        files = galaxy_inputs(galaxy)
        hst = {band: [files[f"{band}_sci"], files[f"{band}_wht"]] for band in samples.hst_band_keys(row)}
        args += f" --cube {shlex.quote(files['muse_cube'])} --hst-images {shell_json(hst)}"
    return args


def tile_tables(wildcards):
    """Tables of every tile that owns bins (known once the galaxy is binned)."""
    from sfh_pipeline.products import read_tiles

    tiles = read_tiles(checkpoints.observe_bins.get(galaxy=wildcards.galaxy).output.tiles)
    return [galaxy_file(wildcards.galaxy, "tiles", f"{tile}.fits") for tile in tiles]


if "sample" in config:
    SAMPLE = samples.read_sample_sheet(workflow_path(config["sample"]["sheet"]))
    validate(SAMPLE, "../schemas/galaxies.schema.yaml")
    GALAXIES = samples.select_galaxies(SAMPLE, config.get("galaxies"), config["sample"]["sheet"])
    _missing = samples.missing_input_files(
        SAMPLE,
        [g for g in GALAXIES if g not in (config.get("mock") or {})],
        config["sample"]["muse_dir"],
        config["sample"]["hst_dir"],
        downloaded=config.get("downloads") or {},
    )
    if _missing:
        logger.warning(samples.describe_missing(_missing, config["sample"]["muse_dir"], config["sample"]["hst_dir"]))
else:
    SAMPLE, GALAXIES = None, []
MOCK_GALAXIES = [g for g in GALAXIES if g in (config.get("mock") or {})]
# real galaxies are validated against full spectral fitting when the config has a validate section
REAL_GALAXIES = [g for g in GALAXIES if g not in MOCK_GALAXIES] if config.get("validate") else []
# single real spectra, fitted like the real galaxies' bins (needs the validate section too)
# sets of single real spectra: {set: {name: {file, row, ebv_galactic}}}
REAL_SPECTRA = (config.get("real_spectra") or {}) if config.get("validate") else {}
MOSAICS = samples.mosaics(SAMPLE, GALAXIES) if SAMPLE is not None else {}
# what the atlas shows: mosaics in place of their pointings
TARGETS = list(MOSAICS) + [g for g in GALAXIES if not any(g in p for p in MOSAICS.values())]


def name_pattern(names):
    """A wildcard constraint matching exactly `names` (and nothing when there are none)."""
    import re

    return "|".join(re.escape(n) for n in names) or "(?!x)x"
