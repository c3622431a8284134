"""Snakemake script of rule hf_folder: see llm4dsr.llm.write_hf_folder."""
from llm4dsr import logs
from llm4dsr.llm import write_hf_folder

with logs.rule_log(snakemake.log[0]):
    write_hf_folder(snakemake.wildcards.model, snakemake.output[0])
