"""Snakemake script of rule report: see llm4dsr.report.run."""
from llm4dsr import logs, report

with logs.rule_log(snakemake.log[0]):
    report.run(snakemake.input.notebook, snakemake.output.notebook, snakemake.output.html,
               {**snakemake.params.parameters, "detection_csv": snakemake.output.detection},
               figures_dir=snakemake.output.figures, out_code_html=snakemake.output.code_html)
