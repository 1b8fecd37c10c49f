# Stage `trainset`: synthetic spectra + photometry + labels, one job per chunk, into one zarr store.


localrules:
    trainset_qa,


rule trainset_init:
    input:
        ssp=ancient(ssp_store(SSP_NAME)),
    output:
        trainset_layout("{trainset}"),
    log:
        "logs/trainset/{trainset}/init.log",
    conda:
        SFH_ENV
    params:
        config=lambda wc: shell_json(TRAINSET_SETTINGS),
        store=lambda wc: trainset_store(wc.trainset),
        filters=config["filters"],
    shell:
        "sfh-pipeline trainset init --config {params.config} --store {params.store:q}"
        " --ssp {input.ssp:q} --filters {params.filters} --layout {output:q} 2> {log:q}"


rule trainset_chunk:
    input:
        # Not ancient(): with an ancient layout, Snakemake 9 drops the new chunks' jobs from a run
        # that re-creates the layout (snakemake/snakemake#4166), so growing n_spectra needed two
        # runs. Growing it therefore regenerates the existing chunks too (bit-identical, seeded).
        layout=trainset_layout("{trainset}"),
        ssp=ancient(ssp_store(SSP_NAME)),
    output:
        trainset_marker("{trainset}", "{chunk}"),
    log:
        "logs/trainset/{trainset}/chunk_{chunk}.log",
    benchmark:
        "benchmarks/trainset/{trainset}/chunk_{chunk}.tsv"
    wildcard_constraints:
        chunk=r"\d+",
    conda:
        SFH_ENV
    resources:
        mem_mb=memory_mb(2000),
        runtime=30,
    params:
        generator=lambda wc: TRAINSET_DIGEST,
        store=lambda wc: trainset_store(wc.trainset),
    shell:
        "sfh-pipeline trainset chunk --store {params.store:q} --index {wildcards.chunk}"
        " --ssp {input.ssp:q} --marker {output:q} 2> {log:q}"


rule trainset_finalize:
    input:
        markers=lambda wc: trainset_markers(wc.trainset),
    output:
        trainset_report("{trainset}"),
    log:
        "logs/trainset/{trainset}/finalize.log",
    conda:
        SFH_ENV
    params:
        store=lambda wc: trainset_store(wc.trainset),
    shell:
        "sfh-pipeline trainset finalize --store {params.store:q} --markers {input.markers:q}"
        " --report {output:q} 2> {log:q}"


rule trainset_qa:
    input:
        trainset_report("{trainset}"),
    output:
        report("results/qa/trainset_{trainset}.png", caption="../report/trainset.rst", category="QA"),
    log:
        "logs/trainset/{trainset}/qa.log",
    conda:
        SFH_ENV
    params:
        store=lambda wc: trainset_store(wc.trainset),
    shell:
        "sfh-pipeline trainset qa --store {params.store:q} --output {output:q} 2> {log:q}"
