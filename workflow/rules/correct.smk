# Correction stage: every condition except clean and noisy rewrites the windows of a
# noise setting. LLM conditions read the LLM's scores and suggestions; the baseline
# detectors read their own scores (co-occurrence suggestions); random copies the
# number of llm4dsr's changes per split.


rule correct:
    input:
        unpack(correct_inputs),
    output:
        windows="results/{dataset}/{noise}/correct/{condition}/windows.parquet",
        changes="results/{dataset}/{noise}/correct/{condition}/changes.parquet",
    wildcard_constraints:
        condition=names.pattern(names.CORRECTIONS),
    log:
        "logs/correct/{dataset}/{noise}/{condition}.log",
    benchmark:
        "results/benchmarks/correct/{dataset}/{noise}/{condition}.tsv"
    params:
        correct=config["correct"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/correct.py"
