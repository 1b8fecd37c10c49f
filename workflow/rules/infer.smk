# Stage `infer`: one job per tile that owns Voronoi bins: extract, predict, forward-model check.


rule infer_tile:
    input:
        cube=lambda wc: galaxy_inputs(wc.galaxy)["muse_cube"],
        bins=galaxy_file("{galaxy}", "observe", "bins.fits"),
        hst=galaxy_file("{galaxy}", "observe", "hst_on_muse.fits"),
        model=MODEL_PT,
        ssp=ancient(ssp_store(SSP_NAME)),
    output:
        galaxy_file("{galaxy}", "tiles", "{tile}.fits"),
    log:
        "logs/infer/{galaxy}/{tile}.log",
    benchmark:
        "benchmarks/infer/{galaxy}/{tile}.tsv"
    wildcard_constraints:
        tile=r"y\d+x\d+",
    conda:
        SFH_ENV
    threads: 1
    resources:
        gpu=config["infer"]["gpus"],
        mem_mb=memory_mb(4000),
    params:
        args=lambda wc: galaxy_args(wc.galaxy, columns=samples.INFER_JOB_COLUMNS),
        settings=shell_json(config["infer"]),
        model_sha256=MODEL_SHA256_ARG,
    shell:
        "sfh-pipeline infer {params.args} --bins {input.bins:q} --hst {input.hst:q} --model {input.model:q} {params.model_sha256}"
        " --ssp {input.ssp:q} --tile {wildcards.tile} --settings {params.settings} --out {output:q} 2> {log:q}"
