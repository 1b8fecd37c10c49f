# Stage `fetch`: one rule per entry of config `downloads` (the real data a run reads), each
# file checked against its sha256.

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
