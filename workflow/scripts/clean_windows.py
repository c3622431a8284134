"""Snakemake script of rule clean_windows: see llm4dsr.correct.run_clean."""
from llm4dsr import correct, logs

with logs.rule_log(snakemake.log[0]):
    correct.run_clean(snakemake.input[0], snakemake.output[0])
