"""Capture stages: the synthetic capture (when configured) and the per-subject capture index."""

if SYNTHETIC:

    rule synthetic_capture:
        output:
            capture=directory(CAPTURE_ROOT),
            groundtruth=directory(config["synthetic"]["groundtruth"]),
        log:
            f"{LOGS}/synthetic_capture.log",
        benchmark:
            f"{BENCHMARKS}/synthetic_capture.tsv"
        conda:
            "../envs/preprocess.yaml"
        threads: 2
        params:
            config=sections("capture", "synthetic"),
            version=STAGE_VERSIONS["synthetic_capture"],
        shell:
            "avat3r synthetic --config {params.config:q} --out {output.capture:q}"
            " --groundtruth {output.groundtruth:q} --workers {threads} > {log:q} 2>&1"


rule capture_index:
    input:
        capture_input,
    output:
        f"{RESULTS}/{{subject}}/capture_index.json",
    log:
        f"{LOGS}/capture_index/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/capture_index/{{subject}}.tsv"
    conda:
        "../envs/preprocess.yaml"
    params:
        config=sections("capture"),
        version=STAGE_VERSIONS["capture_index"],
    shell:
        "avat3r capture-index --config {params.config:q} --subject {wildcards.subject}"
        " --out {output:q} > {log:q} 2>&1"
