# LLM4DSR study. Run: snakemake --cores 2   (see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/noise.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/correct.smk"
include: "workflow/rules/denoise.smk"
include: "workflow/rules/backbone.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_outputs(),
    default_target: True
