"""Snakemake script of rule units: see llm4dsr.units.run."""
from llm4dsr import logs, units

with logs.rule_log(snakemake.log[0]):
    units.run(snakemake.input.sequences, snakemake.input.windows, snakemake.params.mode, snakemake.params.block,
              snakemake.output[0])
