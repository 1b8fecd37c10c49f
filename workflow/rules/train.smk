# Stage `train`: the CNN on the training set; resumes from results/models/<model>/checkpoints/.
# An ensemble (model.ensemble) trains one member per seed in results/models/<model>/members/<seed>/
# and combines them, calibrated on the validation split, into results/models/<model>/model.pt.


# An ensemble model (model.ensemble) is made by combine_ensemble from its members, never trained whole.
if not ENSEMBLE:

    rule train:
        input:
            trainset_report(TRAINSET_NAME),
            # the model file a run that lost its checkpoint continues from (model.training.warm_start)
            warm_start=lambda wc: config["model"].get("training", {}).get("warm_start") or [],
            # the network whose predictions this one learns too (model.training.teacher)
            teacher=lambda wc: config["model"].get("training", {}).get("teacher") or [],
            # the model file whose weights a fine-tuning starts from (model.training.initial_weights)
            initial_weights=lambda wc: config["model"].get("training", {}).get("initial_weights") or [],
        output:
            model=model_file("{model}", "model.pt"),
            history=model_file("{model}", "history.csv"),
            curve=report(
                model_file("{model}", "learning_curve.png"), caption="../report/learning_curve.rst", category="Model"
            ),
        log:
            "logs/train/{model}.log",
        benchmark:
            "benchmarks/train/{model}.tsv"
        wildcard_constraints:
            model=TRAINED_MODEL,
        conda:
            SFH_ENV
        threads: config["model"]["threads"]
        resources:
            gpu=config["model"]["gpus"],
            mem_mb=memory_mb(8000),
            runtime=720,
        params:
            settings=lambda wc: shell_json({k: v for k, v in config["model"].items() if k != "name"}),
            store=trainset_store(TRAINSET_NAME),
            out=lambda wc: model_dir(wc.model),
            # several GPUs (resources gpu > 1): one DDP process per GPU
            launcher=lambda wc, resources: (
                f"torchrun --standalone --nproc_per_node={resources.gpu} -m sfh_pipeline"
                if int(resources.gpu) > 1
                else "sfh-pipeline"
            ),
        shell:
            "{params.launcher} train --trainset {params.store:q} --out {params.out:q}"
            " --config {params.settings} --name {wildcards.model} 2> {log:q}"


rule evaluate:
    input:
        model=model_file("{model}", "model.pt"),
        trainset=trainset_report(TRAINSET_NAME),
    output:
        metrics=model_file("{model}", "metrics.json"),
        figures=report(
            expand(model_file("{{model}}", "{figure}.png"), figure=["pred_vs_true", "sfh_bins", "age_metallicity"]),
            caption="../report/evaluation.rst",
            category="Model",
        ),
    log:
        "logs/evaluate/{model}.log",
    benchmark:
        "benchmarks/evaluate/{model}.tsv"
    conda:
        SFH_ENV
    threads: config["model"]["threads"]
    resources:
        mem_mb=memory_mb(8000),
    params:
        store=trainset_store(TRAINSET_NAME),
        out=lambda wc: model_dir(wc.model),
    shell:
        "sfh-pipeline evaluate --model {input.model:q} --trainset {params.store:q} --out {params.out:q} 2> {log:q}"


rule train_member:
    input:
        trainset_report(TRAINSET_NAME),
    output:
        model=member_file("{model}", "{seed}", "model.pt"),
        history=member_file("{model}", "{seed}", "history.csv"),
    log:
        "logs/train/{model}/member_{seed}.log",
    benchmark:
        "benchmarks/train/{model}/member_{seed}.tsv"
    wildcard_constraints:
        model=TRAINED_MODEL,
        seed=r"\d+",
    conda:
        SFH_ENV
    threads: config["model"]["threads"]
    resources:
        gpu=min(1, config["model"]["gpus"]),  # one GPU a member: members are independent jobs
        mem_mb=memory_mb(8000),
        runtime=720,
    params:
        settings=lambda wc: shell_json(member_settings(wc.seed)),
        store=trainset_store(TRAINSET_NAME),
        out=lambda wc: member_dir(wc.model, wc.seed),
    shell:
        # torch would otherwise take every core of the node, whatever the job was given
        "OMP_NUM_THREADS={threads} sfh-pipeline train --trainset {params.store:q} --out {params.out:q}"
        " --config {params.settings} --name {wildcards.model}-{wildcards.seed} 2> {log:q}"


if ENSEMBLE:

    rule combine_ensemble:
        input:
            trainset_report(TRAINSET_NAME),
            members=lambda wc: [member_file(wc.model, seed, "model.pt") for seed in ENSEMBLE["seeds"]],
        output:
            model=model_file("{model}", "model.pt"),
        log:
            "logs/train/{model}/combine.log",
        benchmark:
            "benchmarks/train/{model}/combine.tsv"
        wildcard_constraints:
            model=TRAINED_MODEL,
        conda:
            SFH_ENV
        threads: config["model"]["threads"]
        resources:
            mem_mb=memory_mb(8000),
        params:
            store=trainset_store(TRAINSET_NAME),
        shell:
            # the members answer the validation split; the calibration of their combination is fitted on it
            "OMP_NUM_THREADS={threads} sfh-pipeline combine-ensemble --members {input.members:q}"
            " --trainset {params.store:q} --out {output.model:q} --name {wildcards.model} 2> {log:q}"
