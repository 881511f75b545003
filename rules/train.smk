"""Training and evaluation: one run per variant of the model and training config, from the dataset index.

Every variant is evaluated on one protocol file (rule `protocol`), and `gather` puts every variant's
metrics into one table and one plot.
"""


rule train:
    input:
        index=f"{RESULTS}/dataset_index.json",
        # read through the dataset index (recon/data.py): declared, so that a missing one is rebuilt
        views=expand(f"{RESULTS}/{{subject}}/views.json", subject=SUBJECTS),
        # A fine-tune variant's train.init_from model and train.mix indices (none for the others).
        extra=train_extra_inputs,
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


rule protocol:
    input:
        index=f"{RESULTS}/dataset_index.json",
        # read through the dataset index (recon/data.py): declared, so that a missing one is rebuilt
        views=expand(f"{RESULTS}/{{subject}}/views.json", subject=SUBJECTS),
        fixed=protocol_file,
    output:
        f"{RESULTS}/evaluate/protocol.json",
    log:
        f"{LOGS}/evaluate/protocol.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        config=protocol_json,
        dataset=dataset_label,
        version=STAGE_VERSIONS["protocol"],
    shell:
        "avat3r protocol --config {params.config:q} --dataset {params.dataset:q} --index {input.index:q}"
        " --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        # the train rule's model.pt, or a model trained elsewhere (evaluate.models)
        model=evaluate_model,
        index=f"{RESULTS}/dataset_index.json",
        # read through the dataset index (recon/data.py): declared, so that a missing one is rebuilt
        views=expand(f"{RESULTS}/{{subject}}/views.json", subject=SUBJECTS),
        protocol=f"{RESULTS}/evaluate/protocol.json",
    output:
        metrics=f"{RESULTS}/evaluate/{{variant}}/metrics.json",
        table=f"{RESULTS}/evaluate/{{variant}}/metrics.csv",
        grid=f"{RESULTS}/evaluate/{{variant}}/grid.png",
        html=f"{RESULTS}/evaluate/{{variant}}/summary.html",
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
        " --protocol {input.protocol:q} --out {params.out:q} > {log:q} 2>&1"


rule gather:
    input:
        expand(f"{RESULTS}/evaluate/{{variant}}/metrics.json", variant=EVALUATED),
    output:
        csv=f"{RESULTS}/evaluate/summary.csv",
        json=f"{RESULTS}/evaluate/summary.json",
        png=f"{RESULTS}/evaluate/summary.png",
    log:
        f"{LOGS}/evaluate/gather.log",
    localrule: True
    conda:
        "../envs/train.yaml"
    params:
        version=STAGE_VERSIONS["gather"],
        out=lambda wildcards, output: os.path.dirname(output.csv),
    shell:
        "avat3r gather --metrics {input:q} --out {params.out:q} > {log:q} 2>&1"
