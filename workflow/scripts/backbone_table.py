"""Snakemake script of rules backbone_table and sweep_table: see llm4dsr.backbones.results.aggregate."""
from llm4dsr import logs
from llm4dsr.backbones import results

with logs.rule_log(snakemake.log[0]):
    results.aggregate(snakemake.input.runs, snakemake.output.csv, snakemake.output.md, snakemake.params.intervals,
                      snakemake.params.seed, windows=dict(zip(snakemake.params.conditions, snakemake.input.windows)),
                      catalogue=snakemake.input.catalogue)
