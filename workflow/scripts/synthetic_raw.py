"""Snakemake script of rule synthetic_raw: see llm4dsr.synthetic.write_raw."""
from llm4dsr import logs, synthetic

with logs.rule_log(snakemake.log[0]) as log:
    out = synthetic.write_raw(snakemake.params.dataset, snakemake.wildcards.file, snakemake.output[0],
                              snakemake.params.seed)
    log.info("%s: synthetic %s file written (no download)", out, snakemake.params.dataset["source"])
