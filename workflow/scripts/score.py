"""Snakemake script of rules score and score_selfsup: see llm4dsr.score.run."""
from llm4dsr import logs, score

with logs.rule_log(snakemake.log[0]):
    score.run(snakemake.input.units, snakemake.input.catalogue, snakemake.params.llm,
              lora=snakemake.input.get("lora"), model=snakemake.input.get("model"),
              suggest_cfg=snakemake.params.suggest, methods=snakemake.params.methods,
              out_scores=list(snakemake.output.scores), max_per_sequence=snakemake.params.max_per_sequence,
              out_suggestions=snakemake.output.get("suggestions"), out_stats=snakemake.output.stats,
              threads=snakemake.threads, seed=snakemake.params.seed, prompt_style=snakemake.params.prompt_style)
