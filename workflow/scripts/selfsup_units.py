"""Snakemake script of rule selfsup_units: see llm4dsr.units.self_supervised_units."""
import numpy as np

from llm4dsr import logs
from llm4dsr.io import read_parquet, write_parquet
from llm4dsr.units import self_supervised_units

with logs.rule_log(snakemake.log[0]) as log:
    windows = read_parquet(snakemake.input.windows, ["window", "user", "split", "target_pos", "history_clean"])
    items = read_parquet(snakemake.input.catalogue, ["item", "count"])
    n_items = int(items["item"].max())
    counts = None
    if snakemake.params.replace_with == "popularity":
        counts = np.zeros(n_items + 1)
        counts[items["item"].to_numpy()] = items["count"].to_numpy()
    units = self_supervised_units(windows, n_items, snakemake.params.n, snakemake.params.seed, counts)
    log.info("%d self-supervised units (%s replacements)", len(units), snakemake.params.replace_with)
    write_parquet(units, snakemake.output[0])
