"""Snakemake script of rule backbone_table: see llm4dsr.backbone.aggregate."""
import sys

from llm4dsr import backbone, logs
from llm4dsr.io import Llm4dsrError

log = logs.setup(snakemake.log[0])
try:
    backbone.aggregate(snakemake.input, snakemake.output.csv, snakemake.output.md)
except Llm4dsrError as exc:
    log.error("%s", exc)
    sys.exit(f"error: {exc}")
