"""Snakemake script of rule backbone: see llm4dsr.backbones.trainer.run_seeds, or copy_seeds
where another job trains on the same windows."""
from llm4dsr import logs
from llm4dsr.backbones import trainer

with logs.rule_log(snakemake.log[0]):
    w = snakemake.wildcards
    meta = {"dataset": w.dataset, "noise": w.noise, "condition": w.condition}
    if "same_runs" in snakemake.input.keys():
        trainer.copy_seeds(snakemake.input.same_runs, snakemake.input.same_windows, snakemake.input.windows,
                           list(snakemake.output.runs), meta)
    else:
        trainer.run_seeds(snakemake.input.windows, snakemake.input.catalogue, list(snakemake.output.runs), w.model,
                          snakemake.params.backbone, snakemake.params.seeds, snakemake.params.max_len,
                          threads=snakemake.threads, meta=meta)
