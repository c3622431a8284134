"""Snakemake script of rule backbone_table: see llm4dsr.backbone.aggregate."""
from llm4dsr import backbone, logs

with logs.rule_log(snakemake.log[0]):
    backbone.aggregate(snakemake.input, snakemake.output.csv, snakemake.output.md)
