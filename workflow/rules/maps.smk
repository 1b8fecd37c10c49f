# Stage `maps`: tiles painted into the per-galaxy maps, checks against mock truths, the atlas.


# seconds of work each: not worth a trip through a batch queue
localrules:
    maps_vs_truth,
    atlas,


rule maps:
    input:
        bins=galaxy_file("{galaxy}", "observe", "bins.fits"),
        tables=tile_tables,
        model=MODEL_PT,
    output:
        maps=maps_file("{galaxy}"),
        png=report(
            galaxy_file("{galaxy}", "maps", "{galaxy}_maps.png"),
            caption="../report/maps.rst",
            category="Galaxies",
            subcategory="{galaxy}",
        ),
    log:
        "logs/maps/{galaxy}.log",
    benchmark:
        "benchmarks/maps/{galaxy}.tsv"
    wildcard_constraints:
        galaxy=name_pattern(GALAXIES),
    conda:
        SFH_ENV
    params:
        args=lambda wc: galaxy_args(wc.galaxy, data=False),
        model_sha256=MODEL_SHA256_ARG,
    shell:
        "sfh-pipeline maps assemble {params.args} --bins {input.bins:q}"
        " --tables {input.tables:q} --model {input.model:q} {params.model_sha256} --out {output.maps:q} --png {output.png:q} 2> {log:q}"


rule maps_vs_truth:
    input:
        maps=maps_file("{galaxy}"),
        truth=mock_truth("{galaxy}"),
        bins=galaxy_file("{galaxy}", "observe", "bins.fits"),
    output:
        galaxy_file("{galaxy}", "maps", "{galaxy}_vs_truth.json"),
    log:
        "logs/maps/{galaxy}_vs_truth.log",
    conda:
        SFH_ENV
    params:
        args=lambda wc: galaxy_args(wc.galaxy, data=False),
    shell:
        "sfh-pipeline maps compare {params.args} --maps {input.maps:q}"
        " --truth {input.truth:q} --bins {input.bins:q} --out {output:q} 2> {log:q}"


rule mosaic:
    input:
        lambda wc: [maps_file(pointing) for pointing in MOSAICS[wc.galaxy]],
    output:
        maps=maps_file("{galaxy}"),
        png=report(
            galaxy_file("{galaxy}", "maps", "{galaxy}_maps.png"),
            caption="../report/maps.rst",
            category="Galaxies",
            subcategory="{galaxy}",
        ),
    log:
        "logs/maps/{galaxy}.log",
    wildcard_constraints:
        galaxy=name_pattern(MOSAICS),
    conda:
        SFH_ENV
    shell:
        "sfh-pipeline maps mosaic --galaxy {wildcards.galaxy} --maps {input:q} --out {output.maps:q}"
        " --png {output.png:q} 2> {log:q}"


rule atlas:
    input:
        [maps_file(target) for target in TARGETS],
    output:
        png=report("results/atlas/atlas.png", caption="../report/atlas.rst", category="Galaxies"),
        summary="results/atlas/summary.json",
    log:
        "logs/maps/atlas.log",
    conda:
        SFH_ENV
    shell:
        "sfh-pipeline maps atlas --maps {input:q} --png {output.png:q} --json {output.summary:q} 2> {log:q}"
