"""Snakemake script of rule detect: fit one non-LLM detector, score units and selfsup units."""
from llm4dsr import logs
from llm4dsr.detectors import make_detector, scores_frame
from llm4dsr.io import read_parquet, write_parquet

with logs.rule_log(snakemake.log[0]) as log:
    sequences = read_parquet(snakemake.input.sequences, ["user", "pos", "item", "split"])
    n_items = int(read_parquet(snakemake.input.catalogue, ["item"])["item"].max())
    detector = make_detector(snakemake.wildcards.detector, snakemake.params.seed, snakemake.threads)
    detector.fit(sequences, n_items)
    for key in ("units", "selfsup_units"):
        units = read_parquet(snakemake.input[key], ["unit", "user", "items"])
        out = snakemake.output.scores if key == "units" else snakemake.output.selfsup
        write_parquet(scores_frame(units, detector.score(units)), out)
        log.info("%s: scored %d units -> %s", detector.name, len(units), out)
