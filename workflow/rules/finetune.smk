# Fine-tuning stage: self-supervised examples from the train windows, then LoRA
# training of the base LLM. A rerun after an interruption resumes from the last
# checkpoint in results/{dataset}/finetune/checkpoints/ (not an output, so it survives).


rule finetune:
    input:
        windows=f"results/{{dataset}}/{config['finetune']['noise']}/windows.parquet",
        catalogue="results/{dataset}/data/items.parquet",
        selfsup_units="results/{dataset}/selfsup/units.parquet",
    output:
        adapter=directory("results/{dataset}/finetune/adapter"),
        loss="results/{dataset}/finetune/loss.tsv",
        curve="results/{dataset}/finetune/learning_curve.tsv",
        examples="results/{dataset}/finetune/sft_train.jsonl",
    log:
        "logs/finetune/{dataset}.log",
    benchmark:
        "results/benchmarks/finetune/{dataset}.tsv"
    params:
        finetune=config["finetune"],
        llm=config["llm"],
        seed=config["seed"],
        intervals=config["intervals"],
    priority: 50  # on the critical path (the LLM chain): run before the many backbone jobs
    threads: config["llm"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=config["llm"]["gpus"],
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/finetune.py"
