"""Snakemake script of rules score and score_selfsup: see llm4dsr.score.run."""
from llm4dsr import logs, score

with logs.rule_log(snakemake.log[0]):
    score.run(snakemake.input.units, snakemake.input.catalogue, snakemake.params.llm,
              lora=snakemake.input.get("lora"), model=snakemake.input.get("model"),
              suggest_cfg=snakemake.params.suggest, method=snakemake.params.score["method"],
              out_first=snakemake.output.first, out_full=snakemake.output.full,
              out_suggestions=snakemake.output.get("suggestions"), out_stats=snakemake.output.stats,
              threads=snakemake.threads, seed=snakemake.params.seed, prompt_style=snakemake.params.prompt_style)
