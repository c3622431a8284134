"""Snakemake script of rule download: see llm4dsr.data.download."""
from llm4dsr import data, logs

with logs.rule_log(snakemake.log[0]) as log:
    sha = data.download(snakemake.params.url, snakemake.output.raw, snakemake.params.md5)
    log.info("%s: sha256 %s", snakemake.output.raw, sha)
