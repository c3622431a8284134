"""Snakemake script of rule backbone: see llm4dsr.backbones.trainer.run."""
from llm4dsr import logs
from llm4dsr.backbones import trainer

with logs.rule_log(snakemake.log[0]):
    w = snakemake.wildcards
    trainer.run(snakemake.input.windows, snakemake.input.catalogue, snakemake.output[0], w.model,
                snakemake.params.backbone, int(w.seed), snakemake.params.max_len, threads=snakemake.threads,
                meta={"dataset": w.dataset, "noise": w.noise, "condition": w.condition})
