"""Snakemake script of rule units: see llm4dsr.units.make_units."""
from llm4dsr import logs
from llm4dsr.io import read_parquet, write_parquet
from llm4dsr.units import check_units, make_units

with logs.rule_log(snakemake.log[0]) as log:
    sequences = read_parquet(snakemake.input.sequences, ["user", "pos", "item", "noise", "split"])
    windows = read_parquet(snakemake.input.windows, ["window", "user", "split", "target_pos", "history",
                                                     "history_noise", "target", "target_noise"])
    units = make_units(sequences, windows, snakemake.params.mode, snakemake.params.block)
    check_units(units, windows, sequences, name=snakemake.output[0])
    log.info("%d units (%s), %d items", len(units), units.groupby("split").size().to_dict(),
             units["items"].map(len).sum())
    write_parquet(units, snakemake.output[0])
