"""Snakemake script of rule data: see llm4dsr.data.run."""
import sys
from pathlib import Path

from llm4dsr import data, logs
from llm4dsr.io import Llm4dsrError

log = logs.setup(snakemake.log[0])
try:
    data.run(snakemake.params.dataset, snakemake.params.window, snakemake.params.seed,
             out_dir=Path(snakemake.output.stats).parent,
             raw_dir=Path("resources") / snakemake.wildcards.dataset, name=snakemake.wildcards.dataset)
except Llm4dsrError as exc:
    log.error("%s", exc)
    sys.exit(f"error: {exc}")
