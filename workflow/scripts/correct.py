"""Snakemake script of rule correct: see llm4dsr.correct.run."""
from llm4dsr import correct, logs
from llm4dsr.io import read_parquet, write_parquet

with logs.rule_log(snakemake.log[0]):
    inp = snakemake.input
    optional = {key: read_parquet(inp[key]) for key in ("scores", "suggestions", "llm_changes") if key in inp.keys()}
    windows, changes = correct.run(
        snakemake.wildcards.condition, read_parquet(inp.windows), read_parquet(inp.sequences),
        read_parquet(inp.units), int(read_parquet(inp.catalogue, ["item"])["item"].max()),
        snakemake.params.correct, snakemake.params.seed, **optional)
    write_parquet(windows, snakemake.output.windows)
    write_parquet(changes, snakemake.output.changes)
