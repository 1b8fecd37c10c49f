# sfh-pipeline: star-formation histories of nearby galaxies from MUSE spectra + HST photometry.
# Table of contents. Stages live in workflow/rules/, their logic in the sfh_pipeline package.
# Run:  snakemake --cores 2                       (embedded default, config/config.yaml)
#       snakemake --configfile config/phangs.yaml --profile profiles/slurm

import os

from snakemake.utils import min_version

min_version("8.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/ssp.smk"
include: "workflow/rules/filters.smk"
include: "workflow/rules/trainset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/mock.smk"
include: "workflow/rules/observe.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/maps.smk"
include: "workflow/rules/validate.smk"


rule all:
    input:
        ssp_store(SSP_NAME),
        f"results/qa/ssp_{SSP_NAME}.png",
        FILTER_TABLE,
        FILTER_CHECK,
        # a pretrained model (model.pretrained) comes with its metrics: no training set, no training
        []
        if PRETRAINED
        else [
            trainset_report(TRAINSET_NAME),
            f"results/qa/trainset_{TRAINSET_NAME}.png",
            model_file(MODEL_NAME, "metrics.json"),
        ],
        [maps_file(target) for target in TARGETS],
        [galaxy_file(galaxy, "maps", f"{galaxy}_vs_truth.json") for galaxy in MOCK_GALAXIES],
        [validation_file(galaxy, "agreement.json") for galaxy in REAL_GALAXIES],
        [validation_file(name, "agreement.json") for name in REAL_SPECTRA],
        VALIDATION_SUMMARY if REAL_GALAXIES or REAL_SPECTRA else [],
        "results/atlas/atlas.png" if GALAXIES else [],
