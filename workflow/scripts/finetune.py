"""Snakemake script of rule finetune: see llm4dsr.finetune.run."""
from llm4dsr import finetune, logs

with logs.rule_log(snakemake.log[0]):
    finetune.run(snakemake.input.windows, snakemake.input.catalogue, snakemake.input.selfsup_units,
                 snakemake.params.llm, snakemake.params.finetune, snakemake.params.seed,
                 out_dir=snakemake.output.adapter.rsplit("/", 1)[0], prompt_style=snakemake.params.prompt_style,
                 threads=snakemake.threads, intervals_cfg=snakemake.params.intervals,
                 valid_units_path=snakemake.input.get("valid_units"))
