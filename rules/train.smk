"""Training: one run per variant of the model and training config, from the dataset index."""


rule train:
    input:
        index=f"{RESULTS}/dataset_index.json",
    output:
        f"{RESULTS}/train/{{variant}}/model.pt",
    log:
        f"{LOGS}/train/{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{variant}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=lambda wildcards: config["train"]["gpus"],
    params:
        config=variant_json,
        version=STAGE_VERSIONS["train"],
        launcher=train_launcher,
        out=lambda wildcards: f"{RESULTS}/train/{wildcards.variant}",
    shell:
        "{params.launcher} train --config {params.config:q} --index {input.index:q} --out {params.out:q}"
        " > {log:q} 2>&1"


rule evaluate:
    input:
        model=f"{RESULTS}/train/{{variant}}/model.pt",
        index=f"{RESULTS}/dataset_index.json",
    output:
        metrics=f"{RESULTS}/evaluate/{{variant}}/metrics.json",
        grid=f"{RESULTS}/evaluate/{{variant}}/grid.png",
    log:
        f"{LOGS}/evaluate/{{variant}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate/{{variant}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        gpu=lambda wildcards: min(config["train"]["gpus"], 1),
    params:
        config=evaluate_json,
        version=STAGE_VERSIONS["evaluate"],
        out=lambda wildcards: f"{RESULTS}/evaluate/{wildcards.variant}",
    shell:
        "avat3r evaluate --config {params.config:q} --model {input.model:q} --index {input.index:q}"
        " --out {params.out:q} > {log:q} 2>&1"
