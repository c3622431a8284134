"""Snakemake script of rule selection_gap: see llm4dsr.backbones.results.selection_gap."""
from llm4dsr import logs
from llm4dsr.backbones import results

with logs.rule_log(snakemake.log[0]):
    results.selection_gap(snakemake.input.runs, snakemake.output.csv, snakemake.output.md)
