"""Snakemake script of rule noise: see llm4dsr.noise.run."""
import sys
from pathlib import Path

from llm4dsr import logs, noise
from llm4dsr.io import Llm4dsrError

log = logs.setup(snakemake.log[0])
try:
    noise.run(snakemake.input.interactions, snakemake.input.catalogue, snakemake.wildcards.noise,
              snakemake.params.window, snakemake.params.seed, out_dir=Path(snakemake.output.stats).parent)
except Llm4dsrError as exc:
    log.error("%s", exc)
    sys.exit(f"error: {exc}")
