"""Snakemake script of rule denoise: see llm4dsr.denoisers.run."""
from llm4dsr import denoisers, logs

with logs.rule_log(snakemake.log[0]):
    inp, out, w = snakemake.input, snakemake.output, snakemake.wildcards
    denoisers.run(w.denoiser, inp.windows, inp.units, inp.catalogue, snakemake.params.settings, snakemake.params.seed,
                  snakemake.params.ks, out.windows, out.changes, out.scores, out.result, threads=snakemake.threads,
                  meta={"dataset": w.dataset, "noise": w.noise})
