"""Snakemake script of rule detector_scores: see llm4dsr.detectors.run."""
from llm4dsr import detectors, logs

with logs.rule_log(snakemake.log[0]):
    inp, out = snakemake.input, snakemake.output
    detectors.run(snakemake.wildcards.detector, inp.sequences, inp.catalogue, [inp.units, inp.selfsup_units],
                  [out.scores, out.selfsup], snakemake.params.seed, snakemake.threads,
                  embeddings_path=inp.get("embeddings"))
