"""Snakemake script of rule export: see llm4dsr.export.run."""
from pathlib import Path

from llm4dsr import export, logs

with logs.rule_log(snakemake.log[0]):
    export.run_from_config(snakemake.input.adapter, snakemake.params.llm, snakemake.params.export,
                           out_dir=Path(snakemake.output.parity).parent, prompt_style=snakemake.params.prompt_style,
                           threads=snakemake.threads)
