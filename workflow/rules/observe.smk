# Stage `observe`: input downloads, mock galaxies (embedded default), HST onto the MUSE grid,
# S/N map, Voronoi bins.

for _path, _source in (config.get("downloads") or {}).items():
    _name = re.sub(r"[^A-Za-z0-9]+", "_", _path).strip("_")

    rule:
        name:
            f"fetch_{_name}"
        output:
            _path,
        log:
            f"logs/fetch/{_name}.log",
        localrule: True
        conda:
            SFH_ENV
        params:
            source=shell_json(_source),
            cache_dir=config["cache_dir"],
        shell:
            "sfh-pipeline fetch --source {params.source} --cache-dir {params.cache_dir:q} --output {output:q} 2> {log:q}"


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


rule observe_hst:
    input:
        unpack(lambda wc: galaxy_inputs(wc.galaxy)),
    output:
        galaxy_file("{galaxy}", "observe", "hst_on_muse.fits"),
    log:
        "logs/observe/{galaxy}/hst.log",
    benchmark:
        "benchmarks/observe/{galaxy}/hst.tsv"
    conda:
        SFH_ENV
    resources:
        mem_mb=memory_mb(8000),
    params:
        args=lambda wc: galaxy_args(wc.galaxy, columns=samples.HST_JOB_COLUMNS),
        psf=config["observe"]["hst_psf_fwhm_arcsec"],
    shell:
        "sfh-pipeline observe hst {params.args} --hst-psf-fwhm {params.psf} --out {output:q} 2> {log:q}"


checkpoint observe_bins:
    input:
        cube=lambda wc: galaxy_inputs(wc.galaxy)["muse_cube"],
    output:
        bins=galaxy_file("{galaxy}", "observe", "bins.fits"),
        tiles=galaxy_file("{galaxy}", "observe", "tiles.json"),
    log:
        "logs/observe/{galaxy}/bins.log",
    benchmark:
        "benchmarks/observe/{galaxy}/bins.tsv"
    conda:
        SFH_ENV
    resources:
        mem_mb=memory_mb(4000),
    params:
        args=lambda wc: galaxy_args(wc.galaxy, columns=samples.BINNING_JOB_COLUMNS),
        settings=lambda wc: shell_json(observe_settings(wc.galaxy)),
    shell:
        "sfh-pipeline observe bins {params.args} --settings {params.settings}"
        " --bins {output.bins:q} --tiles {output.tiles:q} 2> {log:q}"
