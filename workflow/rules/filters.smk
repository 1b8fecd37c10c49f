# Stage `filters`: real HST total-system throughputs (ppxf's FILTER.RES) and their check.


rule filters:
    output:
        table=FILTER_TABLE,
        check=report(FILTER_CHECK, caption="../report/filters.rst", category="QA"),
    log:
        "logs/filters/filters.log",
    conda:
        SFH_ENV
    params:
        filter_keys=config["filters"],
    shell:
        "sfh-pipeline filters --keys {params.filter_keys} --table {output.table:q}"
        " --check {output.check:q} 2> {log:q}"
