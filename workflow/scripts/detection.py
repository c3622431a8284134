"""Snakemake script of rule detection: llm4dsr.metrics.detection_report on every detector."""
import sys

from llm4dsr import logs
from llm4dsr.io import Llm4dsrError, read_parquet, write_json
from llm4dsr.metrics import detection_report

log = logs.setup(snakemake.log[0])
try:
    units = read_parquet(snakemake.input.units)
    scores = {n: read_parquet(p, ["unit", "probs", "logp"])
              for n, p in zip(snakemake.params.names, snakemake.input.scores)}
    report = detection_report(units, scores, snakemake.params.threshold)
    for name, splits in report.items():
        log.info("%s: %s", name, {s: (m["roc_auc"], m["top1"]) for s, m in splits.items()})
    write_json(report, snakemake.output[0])
except Llm4dsrError as exc:
    log.error("%s", exc)
    sys.exit(f"error: {exc}")
