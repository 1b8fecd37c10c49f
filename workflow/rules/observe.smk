# Stage `observe`: HST onto the MUSE grid, S/N map, Voronoi bins.


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
