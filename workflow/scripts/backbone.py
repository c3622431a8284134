"""Snakemake script of rule backbone: see llm4dsr.backbone.run."""
import sys

from llm4dsr import backbone, logs
from llm4dsr.io import Llm4dsrError

log = logs.setup(snakemake.log[0])
w = snakemake.wildcards
try:
    backbone.run(snakemake.input.windows, snakemake.input.catalogue, snakemake.output[0], w.model,
                 snakemake.params.backbone, int(w.seed), snakemake.params.max_len, threads=snakemake.threads,
                 meta={"dataset": w.dataset, "noise": w.noise, "condition": w.condition})
except Llm4dsrError as exc:
    log.error("%s", exc)
    sys.exit(f"error: {exc}")
