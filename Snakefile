"""avat3r: multi-view head captures -> Avat3r training shards -> trained and evaluated model.

Run `snakemake --cores all` for the default synthetic capture (config.yaml), `snakemake -n` to see the plan.
"""

from snakemake.utils import min_version

from avat3r_core.config import validate_config

min_version("9.19")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


# Same schema file (workflow/schemas/config.schema.yaml) as the command line; one line naming the bad key.
config.update(validate_config(config))


include: "rules/common.smk"


wildcard_constraints:
    subject="[A-Za-z0-9]+",
    variant="[A-Za-z0-9_]+",


include: "rules/capture.smk"
include: "rules/preprocess.smk"
include: "rules/shards.smk"
include: "rules/train.smk"
include: "rules/report.smk"


onstart:
    # The cost plan (`avat3r plan`) before the first job; Snakemake skips onstart on dry runs.
    from avat3r_core.plan import plan_for_config

    logger.info(plan_for_config(config))


rule all:
    default_target: True
    input:
        f"{RESULTS}/dataset_index.json",
        expand(f"{RESULTS}/evaluate/{{variant}}/metrics.json", variant=EVALUATED),
        # the comparison table (none when nothing is scored: an evaluation-only capture without models)
        multiext(f"{RESULTS}/evaluate/summary", ".csv", ".json", ".png")
        if EVALUATED
        else [],
        # The report's figures (cheap), so that a bare `snakemake --report report.html` shows them.
        rules.report_figures.output,
