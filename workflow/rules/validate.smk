# Stage `validate`: the network against full spectral fits of real galaxies (binned cubes) and
# of real single spectra, and the summary of all of them.


rule validate:
    input:
        cube=lambda wc: galaxy_inputs(wc.galaxy)["muse_cube"],
        bins=galaxy_file("{galaxy}", "observe", "bins.fits"),
        tables=tile_tables,
        model=MODEL_PT,
        ssp=ancient(ssp_store(SSP_NAME)),
        second_ssp=ancient(ssp_store(SECOND_SSP["name"])) if SECOND_SSP else [],
    output:
        agreement=validation_file("{galaxy}", "agreement.json"),
        table=validation_file("{galaxy}", "bins.fits"),
        png=report(
            validation_file("{galaxy}", "maps.png"),
            caption="../report/validation.rst",
            category="Validation",
            subcategory="{galaxy}",
        ),
        residuals=report(
            validation_file("{galaxy}", "residuals.png"),
            caption="../report/validation.rst",
            category="Validation",
            subcategory="{galaxy}",
        ),
    log:
        "logs/validate/{galaxy}.log",
    benchmark:
        "benchmarks/validate/{galaxy}.tsv"
    wildcard_constraints:
        galaxy=name_pattern(REAL_GALAXIES),
    conda:
        SFH_ENV
    threads: 2
    resources:
        mem_mb=memory_mb(4000),
    params:
        args=lambda wc: galaxy_args(wc.galaxy),
        settings=shell_json(
            {
                **{k: v for k, v in config["validate"].items() if k != "second_ssp"},
                "tile_spaxels": config["infer"]["tile_spaxels"],
            }
        ),
        second=lambda wc, input: second_reference_args(input),
        out_dir=lambda wc: os.path.dirname(validation_file(wc.galaxy, "agreement.json")),
        model_sha256=MODEL_SHA256_ARG,
    shell:
        "sfh-pipeline validate {params.args} --bins {input.bins:q} --tables {input.tables:q} --model {input.model:q} {params.model_sha256}"
        " --ssp {input.ssp:q} {params.second} --settings {params.settings} --processes {threads} --out-dir {params.out_dir:q}"
        " 2> {log:q}"


# one rule a set of real spectra: its residual plots are outputs named after its spectra
for _set, _spectra in REAL_SPECTRA.items():

    rule:
        name:
            f"validate_spectra_{_set.replace('-', '_')}"
        input:
            spectra=sorted({entry["file"] for entry in _spectra.values()}),
            model=MODEL_PT,
            ssp=ancient(ssp_store(SSP_NAME)),
            second_ssp=ancient(ssp_store(SECOND_SSP["name"])) if SECOND_SSP else [],
        output:
            agreement=validation_file(_set, "agreement.json"),
            table=validation_file(_set, "spectra.fits"),
            residuals=report(
                [validation_file(_set, f"residuals_{name}.png") for name in sorted(_spectra)],
                caption="../report/validation.rst",
                category="Validation",
                subcategory=_set,
            ),
        log:
            f"logs/validate/{_set}.log",
        benchmark:
            f"benchmarks/validate/{_set}.tsv"
        conda:
            SFH_ENV
        threads: 2
        resources:
            mem_mb=memory_mb(4000),
        params:
            spectra=shell_json(_spectra),
            settings=shell_json({k: v for k, v in config["validate"].items() if k != "second_ssp"}),
            second=lambda wc, input: second_reference_args(input),
            out_dir=lambda wc, output: os.path.dirname(output.agreement),
            model_sha256=MODEL_SHA256_ARG,
        shell:
            "sfh-pipeline validate-spectra --spectra {params.spectra} --model {input.model:q} {params.model_sha256}"
            " --ssp {input.ssp:q} {params.second} --settings {params.settings} --processes {threads}"
            " --out-dir {params.out_dir:q} 2> {log:q}"


rule validate_summary:
    input:
        **{galaxy: validation_file(galaxy, "bins.fits") for galaxy in REAL_GALAXIES},
        **{name: validation_file(name, "spectra.fits") for name in REAL_SPECTRA},
    output:
        VALIDATION_SUMMARY,
    log:
        "logs/validate/summary.log",
    conda:
        SFH_ENV
    params:
        tables=lambda wc, input: " ".join(shlex.quote(f"{name}={path}") for name, path in input.items()),
    shell:
        "sfh-pipeline validate-summary --tables {params.tables} --out {output:q} 2> {log:q}"
