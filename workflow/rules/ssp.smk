# Stage `ssp`: fetch an SSP library (checksummed) and convert it to the standard zarr store.
# {library} is the training library (config `ssp`) or the validate stage's second reference
# (config `validate.second_ssp`), both in SSP_LIBRARIES.


localrules:
    ssp_fetch,
    ssp_qa,


rule ssp_fetch:
    output:
        "resources/downloads/ssp/{library}/{filename}",
    log:
        "logs/ssp/fetch_{library}_{filename}.log",
    wildcard_constraints:
        library=name_pattern(SSP_LIBRARIES),
        filename=name_pattern({os.path.basename(ssp_download(name)) for name in SSP_LIBRARIES}),
    conda:
        SFH_ENV
    params:
        source=lambda wc: shell_json(SSP_LIBRARIES[wc.library]["source"]),
        cache_dir=config["cache_dir"],
    shell:
        "sfh-pipeline ssp fetch --source {params.source} --cache-dir {params.cache_dir:q}"
        " --output {output:q} 2> {log:q}"


rule ssp_convert:
    input:
        lambda wc: ssp_download(wc.library),
    output:
        directory(ssp_store("{library}")),
    log:
        "logs/ssp/convert_{library}.log",
    wildcard_constraints:
        library=name_pattern(SSP_LIBRARIES),
    conda:
        SFH_ENV
    resources:
        mem_mb=4000,
    params:
        fmt=lambda wc: SSP_LIBRARIES[wc.library]["format"],
        source=lambda wc: shell_json(SSP_LIBRARIES[wc.library]["source"]),
        wave=lambda wc: SSP_LIBRARIES[wc.library]["wavelength_range_aa"],
        ages=lambda wc: SSP_LIBRARIES[wc.library]["age_range_yr"],
        zsun=lambda wc: f"--zsun {SSP_LIBRARIES[wc.library]['zsun']}" if "zsun" in SSP_LIBRARIES[wc.library] else "",
    shell:
        "sfh-pipeline ssp convert --input {input:q} --output {output:q} --format {params.fmt}"
        " --name {wildcards.library} --source {params.source}"
        " --wavelength-range {params.wave} --age-range {params.ages} {params.zsun} 2> {log:q}"


rule ssp_qa:
    input:
        ssp_store("{library}"),
    output:
        report("results/qa/ssp_{library}.png", caption="../report/ssp.rst", category="QA"),
    log:
        "logs/ssp/qa_{library}.log",
    conda:
        SFH_ENV
    shell:
        "sfh-pipeline ssp qa --store {input:q} --output {output:q} 2> {log:q}"
