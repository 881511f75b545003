"""Preprocessing stages: frame selection (matting, crops and views follow)."""


rule frames:
    input:
        f"{RESULTS}/{{subject}}/capture_index.json",
    output:
        f"{RESULTS}/{{subject}}/frames.json",
    params:
        config=sections("frames", "seed"),
    log:
        f"{LOGS}/frames/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/frames/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    shell:
        "avat3r frames --config {params.config:q} --index {input:q} --out {output:q} > {log:q} 2>&1"
