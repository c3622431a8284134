"""Snakemake script of rule download: see llm4dsr.sources.download."""
from llm4dsr import logs, sources

with logs.rule_log(snakemake.log[0]) as log:
    sha = sources.download(snakemake.params.url, snakemake.output.raw, snakemake.params.md5)
    log.info("%s: sha256 %s", snakemake.output.raw, sha)
