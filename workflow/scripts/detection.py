"""Snakemake script of rule detection: llm4dsr.metrics.detection_report on every detector."""
from llm4dsr import logs
from llm4dsr.io import read_parquet, write_json
from llm4dsr.metrics import detection_report

with logs.rule_log(snakemake.log[0]) as log:
    units = read_parquet(snakemake.input.units)
    scores = {n: read_parquet(p, ["unit", "probs", "logp"])
              for n, p in zip(snakemake.params.names, snakemake.input.scores)}
    report = detection_report(units, scores, snakemake.params.threshold)
    for name, splits in report.items():
        log.info("%s: %s", name, {s: (m["roc_auc"], m["top1"]) for s, m in splits.items()})
    write_json(report, snakemake.output[0])
