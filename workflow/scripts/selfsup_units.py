"""Snakemake script of rule selfsup_units: see llm4dsr.units.run_selfsup."""
from llm4dsr import logs, units

with logs.rule_log(snakemake.log[0]):
    units.run_selfsup(snakemake.input.windows, snakemake.input.catalogue, snakemake.params.n, snakemake.params.seed,
                      snakemake.params.replace_with, snakemake.output[0])
