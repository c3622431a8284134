"""Snakemake script of rules correct and correct_sweep: see llm4dsr.correct.run."""
from llm4dsr import correct, logs

with logs.rule_log(snakemake.log[0]):
    inp = snakemake.input
    correct.run(snakemake.wildcards.condition, inp.windows, inp.sequences, inp.units, inp.catalogue,
                snakemake.params.correct, snakemake.params.seed, snakemake.output.windows, snakemake.output.changes,
                scores_path=inp.get("scores"), suggestions_path=inp.get("suggestions"),
                llm_changes_path=inp.get("llm_changes"))
