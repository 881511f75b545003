"""Preprocessing stages: frame selection (matting, crops and views follow)."""


rule frames:
    input:
        f"{RESULTS}/{{subject}}/capture_index.json",
    output:
        f"{RESULTS}/{{subject}}/frames.json",
    log:
        f"{LOGS}/frames/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/frames/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        config=sections("frames", "seed"),
        version=STAGE_VERSIONS["frames"],
    shell:
        "avat3r frames --config {params.config:q} --index {input:q} --out {output:q} > {log:q} 2>&1"


rule views:
    input:
        index=f"{RESULTS}/{{subject}}/capture_index.json",
        frames=f"{RESULTS}/{{subject}}/frames.json",
    output:
        f"{RESULTS}/{{subject}}/views.json",
    log:
        f"{LOGS}/views/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/views/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        config=sections("views", "seed"),
        version=STAGE_VERSIONS["views"],
    shell:
        "avat3r views --config {params.config:q} --index {input.index:q} --frames {input.frames:q}"
        " --out {output:q} > {log:q} 2>&1"


rule matting:
    input:
        capture=capture_input,
        index=f"{RESULTS}/{{subject}}/capture_index.json",
        frames=f"{RESULTS}/{{subject}}/frames.json",
        views=f"{RESULTS}/{{subject}}/views.json",
    output:
        directory(f"{RESULTS}/{{subject}}/matting.zarr"),
    log:
        f"{LOGS}/matting/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/matting/{{subject}}.tsv"
    conda:
        MATTING_ENV
    threads: 1
    resources:
        gpu=lambda wildcards: 1 if config["matting"]["backend"] == "bgmv2" else 0,
    params:
        config=sections("capture", "matting"),
        version=STAGE_VERSIONS["matting"],
        groundtruth=groundtruth_arg,
    shell:
        "avat3r matting --config {params.config:q} --index {input.index:q} --frames {input.frames:q}"
        " --views {input.views:q} {params.groundtruth} --out {output:q} > {log:q} 2>&1"


rule crop:
    input:
        capture=capture_input,
        index=f"{RESULTS}/{{subject}}/capture_index.json",
        frames=f"{RESULTS}/{{subject}}/frames.json",
        views=f"{RESULTS}/{{subject}}/views.json",
        matting=f"{RESULTS}/{{subject}}/matting.zarr",
    output:
        directory(f"{RESULTS}/{{subject}}/crops.zarr"),
    log:
        f"{LOGS}/crop/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/crop/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        config=sections("capture", "crop", "matting"),
        version=STAGE_VERSIONS["crop"],
    shell:
        "avat3r crop --config {params.config:q} --index {input.index:q} --frames {input.frames:q}"
        " --views {input.views:q} --matting {input.matting:q} --out {output:q} > {log:q} 2>&1"


rule positions:
    input:
        capture=capture_input,
        crops=f"{RESULTS}/{{subject}}/crops.zarr",
        views=f"{RESULTS}/{{subject}}/views.json",
    output:
        directory(f"{RESULTS}/{{subject}}/positions.zarr"),
    log:
        f"{LOGS}/positions/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/positions/{{subject}}.tsv"
    conda:
        POSITIONS_ENV
    resources:
        gpu=lambda wildcards: 1 if config["positions"]["backend"] == "dust3r" else 0,
    params:
        config=sections("capture", "positions"),
        version=STAGE_VERSIONS["positions"],
        groundtruth=positions_groundtruth_arg,
    shell:
        "avat3r positions --config {params.config:q} --crops {input.crops:q} --views {input.views:q}"
        " {params.groundtruth} --out {output:q} > {log:q} 2>&1"


rule features:
    input:
        crops=f"{RESULTS}/{{subject}}/crops.zarr",
    output:
        directory(f"{RESULTS}/{{subject}}/features.zarr"),
    log:
        f"{LOGS}/features/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/features/{{subject}}.tsv"
    conda:
        "../envs/sapiens.yaml"
    resources:
        gpu=lambda wildcards: 1 if config["features"]["checkpoint"] else 0,
    params:
        config=sections("features", "seed"),
        version=STAGE_VERSIONS["features"],
    shell:
        "avat3r features --config {params.config:q} --subject {wildcards.subject} --crops {input.crops:q}"
        " --out {output:q} > {log:q} 2>&1"
