"""Snakemake script of rule selfsup_units: see llm4dsr.units.self_supervised_units."""
from llm4dsr import logs
from llm4dsr.io import read_parquet, write_parquet
from llm4dsr.units import self_supervised_units

with logs.rule_log(snakemake.log[0]) as log:
    windows = read_parquet(snakemake.input.windows, ["window", "user", "split", "target_pos", "history_clean"])
    n_items = int(read_parquet(snakemake.input.catalogue, ["item"])["item"].max())
    units = self_supervised_units(windows, n_items, snakemake.params.n, snakemake.params.seed)
    log.info("%d self-supervised units", len(units))
    write_parquet(units, snakemake.output[0])
