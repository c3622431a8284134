"""Snakemake script of rule backbone: see llm4dsr.backbones.trainer.run_seeds."""
from llm4dsr import logs
from llm4dsr.backbones import trainer

with logs.rule_log(snakemake.log[0]):
    w = snakemake.wildcards
    trainer.run_seeds(snakemake.input.windows, snakemake.input.catalogue, list(snakemake.output.runs), w.model,
                      snakemake.params.backbone, snakemake.params.seeds, snakemake.params.max_len,
                      threads=snakemake.threads, meta={"dataset": w.dataset, "noise": w.noise, "condition": w.condition})
