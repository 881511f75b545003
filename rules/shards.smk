"""Shards: each subject's stage stores verified as one training shard, and the dataset index."""


rule shards:
    input:
        capture=capture_input,
        frames=f"{RESULTS}/{{subject}}/frames.json",
        crops=f"{RESULTS}/{{subject}}/crops.zarr",
        positions=f"{RESULTS}/{{subject}}/positions.zarr",
        features=f"{RESULTS}/{{subject}}/features.zarr",
    output:
        directory(f"{RESULTS}/{{subject}}/shard.zarr"),
    log:
        f"{LOGS}/shards/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/shards/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        config=sections("capture", "shards"),
        version=STAGE_VERSIONS["shards"],
    shell:
        "avat3r shards --config {params.config:q} --frames {input.frames:q} --crops {input.crops:q}"
        " --positions {input.positions:q} --features {input.features:q} --out {output:q} > {log:q} 2>&1"


rule dataset_index:
    input:
        expand(f"{RESULTS}/{{subject}}/shard.zarr", subject=SUBJECTS),
    output:
        f"{RESULTS}/dataset_index.json",
    log:
        f"{LOGS}/dataset_index.log",
    benchmark:
        f"{BENCHMARKS}/dataset_index.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        # capture: whether it is evaluation-only (every subject held out)
        config=sections("capture", "shards"),
        dataset=dataset_label,
        version=STAGE_VERSIONS["dataset_index"],
    shell:
        "avat3r dataset-index --config {params.config:q} --dataset {params.dataset:q} --shards {input:q}"
        " --out {output:q} > {log:q} 2>&1"
