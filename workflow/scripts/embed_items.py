"""Snakemake script of rule embed_items: see llm4dsr.embed.run."""
from llm4dsr import embed, logs

with logs.rule_log(snakemake.log[0]):
    embed.run(snakemake.input.catalogue, snakemake.params.llm, snakemake.output[0],
              lora=snakemake.input.get("lora"), model=snakemake.input.get("model"), threads=snakemake.threads)
