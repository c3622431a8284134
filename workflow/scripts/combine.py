"""Snakemake script of rule combine: fit the combined scorer on selfsup units, apply it."""
from llm4dsr import combine, logs
from llm4dsr.io import read_parquet, write_parquet

with logs.rule_log(snakemake.log[0]) as log:
    names = snakemake.params.names

    def tables(paths):
        return {n: read_parquet(p, ["unit", "probs", "logp"]) for n, p in zip(names, paths)}

    selfsup = read_parquet(snakemake.input.selfsup_units)
    model = combine.fit(combine.features(selfsup, tables(snakemake.input.selfsup_scores)), snakemake.params.seed)
    units = read_parquet(snakemake.input.units)
    out = combine.predict(model, units, tables(snakemake.input.scores))
    log.info("combined scores for %d of %d units", len(out), len(units))
    write_parquet(out, snakemake.output[0])
