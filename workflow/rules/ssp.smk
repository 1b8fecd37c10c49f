# Stage `ssp`: fetch an SSP library (checksummed) and convert it to the standard zarr store.

localrules: ssp_fetch, ssp_qa


rule ssp_fetch:
    output:
        ssp_download("{library}"),
    params:
        source=lambda wc: shell_json(config["ssp"]["source"]),
        cache_dir=config["cache_dir"],
    conda:
        SFH_ENV
    log:
        "logs/ssp/fetch_{library}.log",
    shell:
        "sfh-pipeline ssp fetch --source {params.source} --cache-dir {params.cache_dir:q}"
        " --output {output:q} 2> {log:q}"


rule ssp_convert:
    input:
        ssp_download("{library}"),
    output:
        directory(ssp_store("{library}")),
    params:
        fmt=config["ssp"]["format"],
        source=lambda wc: shell_json(config["ssp"]["source"]),
        wave=config["ssp"]["wavelength_range_aa"],
        ages=config["ssp"]["age_range_yr"],
        zsun=f"--zsun {config['ssp']['zsun']}" if "zsun" in config["ssp"] else "",
    conda:
        SFH_ENV
    log:
        "logs/ssp/convert_{library}.log",
    resources:
        mem_mb=4000,
    shell:
        "sfh-pipeline ssp convert --input {input:q} --output {output:q} --format {params.fmt}"
        " --name {wildcards.library} --source {params.source}"
        " --wavelength-range {params.wave} --age-range {params.ages} {params.zsun} 2> {log:q}"


rule ssp_qa:
    input:
        ssp_store("{library}"),
    output:
        report("results/qa/ssp_{library}.png", caption="../report/ssp.rst", category="QA"),
    conda:
        SFH_ENV
    log:
        "logs/ssp/qa_{library}.log",
    shell:
        "sfh-pipeline ssp qa --store {input:q} --output {output:q} 2> {log:q}"
