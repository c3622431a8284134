"""Snakemake script of rule clean_windows: see llm4dsr.backbone.write_clean_windows."""
import sys

from llm4dsr import backbone, logs
from llm4dsr.io import Llm4dsrError

log = logs.setup(snakemake.log[0])
try:
    backbone.write_clean_windows(snakemake.input[0], snakemake.output[0])
except Llm4dsrError as exc:
    log.error("%s", exc)
    sys.exit(f"error: {exc}")
