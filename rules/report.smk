"""Report figures: per subject a contact sheet of crops with mattes, position maps and the camera dome; per
variant the training curves, the metrics table and the held-out grid.

`rule all` asks for them, so `snakemake --report report.html` after a run shows every figure (a report
shows the outputs of the DAG it is asked for). A rerun of a stage redraws the pictures of what changed. The
jobs are cheap (a few seconds of CPU each) and run on the submitting machine under a cluster executor.
"""

REPORT = f"{RESULTS}/report"
REPORT_CAPTIONS = "../workflow/report"


rule report_subject:
    input:
        crops=f"{RESULTS}/{{subject}}/crops.zarr",
        positions=f"{RESULTS}/{{subject}}/positions.zarr",
        views=f"{RESULTS}/{{subject}}/views.json",
        index=f"{RESULTS}/{{subject}}/capture_index.json",
    output:
        crops=report(
            f"{REPORT}/{{subject}}/crops.png",
            caption=f"{REPORT_CAPTIONS}/crops.rst",
            category="Crops and mattes",
            subcategory="{subject}",
            labels={"subject": "{subject}", "figure": "crops and mattes"},
        ),
        positions=report(
            f"{REPORT}/{{subject}}/positions.png",
            caption=f"{REPORT_CAPTIONS}/positions.rst",
            category="Position maps",
            subcategory="{subject}",
            labels={"subject": "{subject}", "figure": "position maps"},
        ),
        dome=report(
            f"{REPORT}/{{subject}}/dome.png",
            caption=f"{REPORT_CAPTIONS}/dome.rst",
            category="Camera dome",
            subcategory="{subject}",
            labels={"subject": "{subject}", "figure": "camera dome"},
        ),
    log:
        f"{LOGS}/report_subject/{{subject}}.log",
    benchmark:
        f"{BENCHMARKS}/report_subject/{{subject}}.tsv"
    localrule: True
    conda:
        "../envs/preprocess.yaml"
    params:
        config=sections("views"),
    shell:
        "avat3r report-subject --config {params.config:q} --crops {input.crops:q}"
        " --positions {input.positions:q} --views {input.views:q} --index {input.index:q}"
        " --out-crops {output.crops:q} --out-positions {output.positions:q} --out-dome {output.dome:q}"
        " > {log:q} 2>&1"


rule report_training:
    input:
        model=f"{RESULTS}/train/{{variant}}/model.pt",
        metrics=f"{RESULTS}/evaluate/{{variant}}/metrics.json",
        grid=f"{RESULTS}/evaluate/{{variant}}/grid.png",
    output:
        curves=report(
            f"{REPORT}/train/{{variant}}/curves.png",
            caption=f"{REPORT_CAPTIONS}/curves.rst",
            category="Training",
            subcategory="{variant}",
            labels={"variant": "{variant}", "figure": "training curves"},
        ),
        table=report(
            f"{REPORT}/train/{{variant}}/metrics.html",
            caption=f"{REPORT_CAPTIONS}/metrics.rst",
            category="Training",
            subcategory="{variant}",
            labels={"variant": "{variant}", "figure": "metrics table"},
        ),
        grid=report(
            f"{REPORT}/train/{{variant}}/grid.png",
            caption=f"{REPORT_CAPTIONS}/grid.rst",
            category="Training",
            subcategory="{variant}",
            labels={"variant": "{variant}", "figure": "held-out grid"},
        ),
    log:
        f"{LOGS}/report_training/{{variant}}.log",
    localrule: True
    conda:
        "../envs/preprocess.yaml"
    params:
        # Written by the train job next to model.pt (appended to on resume), not a declared output.
        history=lambda wildcards: f"{RESULTS}/train/{wildcards.variant}/train_log.jsonl",
        summary=rules.gather.output,
    shell:
        "avat3r report-training --variant {wildcards.variant} --history {params.history:q}"
        " --metrics {input.metrics:q} --grid {input.grid:q} --summary {params.summary:q}"
        " --out-curves {output.curves:q} --out-table {output.table:q} --out-grid {output.grid:q}"
        " > {log:q} 2>&1"


rule report_figures:
    input:
        expand(rules.report_subject.output, subject=SUBJECTS),
        expand(rules.report_training.output, variant=VARIANTS),
        # The comparison across variants (rule gather), so that the report's DAG holds it too.
        rules.gather.output if EVALUATED else [],
    output:
        f"{REPORT}/figures.json",
    log:
        f"{LOGS}/report_figures.log",
    localrule: True
    conda:
        "../envs/preprocess.yaml"
    shell:
        "avat3r report-index {input:q} --out {output:q} > {log:q} 2>&1"
