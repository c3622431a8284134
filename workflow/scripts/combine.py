"""Snakemake script of rule combine: see llm4dsr.combine.run."""
from llm4dsr import combine, logs

with logs.rule_log(snakemake.log[0]):
    inp = snakemake.input
    combine.run(snakemake.params.names, inp.units, inp.selfsup_units, list(inp.scores), list(inp.selfsup_scores),
                snakemake.params.seed, snakemake.output[0])
