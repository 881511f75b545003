"""Preprocessing stages: frame selection (matting, crops and views follow)."""


rule frames:
    input:
        f"{RESULTS}/{{subject}}/capture_index.json",
    output:
        f"{RESULTS}/{{subject}}/frames.json",
    params:
        config=sections("frames", "seed"),
        version=STAGE_VERSIONS["frames"],
    log:
        f"{LOGS}/frames/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/frames/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    shell:
        "avat3r frames --config {params.config:q} --index {input:q} --out {output:q} > {log:q} 2>&1"


rule views:
    input:
        index=f"{RESULTS}/{{subject}}/capture_index.json",
        frames=f"{RESULTS}/{{subject}}/frames.json",
    output:
        f"{RESULTS}/{{subject}}/views.json",
    params:
        config=sections("views", "seed"),
        version=STAGE_VERSIONS["views"],
    log:
        f"{LOGS}/views/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/views/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    shell:
        "avat3r views --config {params.config:q} --index {input.index:q} --frames {input.frames:q}"
        " --out {output:q} > {log:q} 2>&1"
