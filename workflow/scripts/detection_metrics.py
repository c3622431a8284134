"""Snakemake script of rule detection_metrics: see llm4dsr.metrics.run_detection."""
from llm4dsr import logs, metrics

with logs.rule_log(snakemake.log[0]):
    params = snakemake.params
    metrics.run_detection(snakemake.input.units, list(snakemake.input.scores), params.names, params.threshold,
                          params.intervals, params.seed, snakemake.output[0])
