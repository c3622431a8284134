"""Snakemake script of rule backbone: see llm4dsr.backbone.run."""
from llm4dsr import backbone, logs

with logs.rule_log(snakemake.log[0]):
    w = snakemake.wildcards
    backbone.run(snakemake.input.windows, snakemake.input.catalogue, snakemake.output[0], w.model,
                 snakemake.params.backbone, int(w.seed), snakemake.params.max_len, threads=snakemake.threads,
                 meta={"dataset": w.dataset, "noise": w.noise, "condition": w.condition})
