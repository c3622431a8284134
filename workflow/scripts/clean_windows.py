"""Snakemake script of rule clean_windows: see llm4dsr.backbone.write_clean_windows."""
from llm4dsr import backbone, logs

with logs.rule_log(snakemake.log[0]):
    backbone.write_clean_windows(snakemake.input[0], snakemake.output[0])
