"""Snakemake script of rule data: see llm4dsr.data.run."""
from pathlib import Path

from llm4dsr import data, logs

with logs.rule_log(snakemake.log[0]):
    data.run(snakemake.params.dataset, snakemake.params.window, snakemake.params.seed,
             out_dir=Path(snakemake.output.stats).parent,
             raw_dir=Path("resources") / snakemake.wildcards.dataset, name=snakemake.wildcards.dataset)
