"""Snakemake script of rule noise: see llm4dsr.noise.run."""
from pathlib import Path

from llm4dsr import logs, noise

with logs.rule_log(snakemake.log[0]):
    noise.run(snakemake.input.interactions, snakemake.input.catalogue, snakemake.wildcards.noise,
              snakemake.params.window, snakemake.params.seed, out_dir=Path(snakemake.output.stats).parent)
