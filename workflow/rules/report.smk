# Report stage: the correction-threshold sweep (llm4dsr re-run at several percentile
# thresholds, trained like any condition by rule backbone), then the report notebook,
# executed with papermill and rendered to offline HTML, its figures saved as PNG files.


use rule correct as correct_sweep with:
    input:
        unpack(correct_inputs),
    output:
        windows="results/{dataset}/{noise}/correct/{condition}-p{threshold}/windows.parquet",
        changes="results/{dataset}/{noise}/correct/{condition}-p{threshold}/changes.parquet",
    wildcard_constraints:
        condition="llm4dsr",
        threshold=r"[0-9]+(\.[0-9]+)?",
    log:
        "logs/correct/{dataset}/{noise}/{condition}-p{threshold}.log",
    benchmark:
        "results/benchmarks/correct/{dataset}/{noise}/{condition}-p{threshold}.tsv"
    params:
        correct=sweep_correct,
        seed=config["seed"],


use rule backbone_table as sweep_table with:
    input:
        unpack(sweep_results),
    output:
        csv=report(
            "results/{dataset}/{noise}/sweep.csv",
            caption="../report/sweep_table.rst",
            category="Backbones",
            subcategory="{noise}",
        ),
        md="results/{dataset}/{noise}/sweep.md",
    log:
        "logs/sweep_table/{dataset}/{noise}.log",
    params:
        conditions=SWEEP_TABLE,
        intervals=config["intervals"],
        seed=config["seed"],


rule report:
    input:
        unpack(report_inputs),
    output:
        notebook="results/{dataset}/report/report.ipynb",
        html=report(
            "results/{dataset}/report/report.html",
            caption="../report/notebook.rst",
            category="Report",
            subcategory="{dataset}",
        ),
        code_html="results/{dataset}/report/report_code.html",
        figures=report(
            directory("results/{dataset}/report/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
            subcategory="{dataset}",
        ),
        detection=report(
            "results/{dataset}/report/detection.csv",
            caption="../report/detection.rst",
            category="Detection",
            subcategory="{dataset}",
        ),
    log:
        "logs/report/{dataset}.log",
    params:
        parameters=report_parameters,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/report.py"
