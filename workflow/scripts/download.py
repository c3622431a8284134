"""Snakemake script of rule download: see llm4dsr.data.download."""
import sys

from llm4dsr import data, logs
from llm4dsr.io import Llm4dsrError

log = logs.setup(snakemake.log[0])
try:
    sha = data.download(snakemake.params.url, snakemake.output.raw, snakemake.params.md5)
    log.info("%s: sha256 %s", snakemake.output.raw, sha)
except Llm4dsrError as exc:
    log.error("%s", exc)
    sys.exit(f"error: {exc}")
