# Stage `mock`: mock galaxies of the embedded default (cube, HST images, truth maps).

for _galaxy in MOCK_GALAXIES:

    rule:
        name:
            f"mock_{_galaxy.replace('-', '_')}"
        input:
            ssp=ancient(ssp_store(SSP_NAME)),
        output:
            **galaxy_inputs(_galaxy),
            truth=mock_truth(_galaxy),
        log:
            f"logs/mock/{_galaxy}.log",
        benchmark:
            f"benchmarks/mock/{_galaxy}.tsv"
        conda:
            SFH_ENV
        params:
            args=galaxy_args(_galaxy, columns=samples.MOCK_JOB_COLUMNS),
            recipe=shell_json(config["mock"][_galaxy]),
            edges=" ".join(str(e) for e in TRAINSET["age_bin_edges_yr"]),
        shell:
            "sfh-pipeline mock {params.args} --recipe {params.recipe} --ssp {input.ssp:q}"
            " --age-bin-edges {params.edges} --truth {output.truth:q} 2> {log:q}"
