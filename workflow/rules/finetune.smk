# Fine-tuning stage: self-supervised examples from the train windows of one noise
# setting ({train_noise}: each setting with finetune.per_setting, else finetune.noise),
# then LoRA training of the base LLM. A rerun after an interruption resumes from the last
# checkpoint in results/{dataset}/finetune/{train_noise}/checkpoints/ (not an output, so it survives).


rule hf_folder:
    output:
        directory("resources/hf/{model}"),
    log:
        "logs/hf_folder/{model}.log",
    wildcard_constraints:
        model=names.pattern(HF_FOLDER_MODELS),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/hf_folder.py"


rule finetune:
    input:
        unpack(curve_units),  # the valid units of report.noise: the curve on injected noise
        unpack(base_model_files),
        windows="results/{dataset}/{train_noise}/windows.parquet",
        catalogue="results/{dataset}/data/items.parquet",
        selfsup_units="results/{dataset}/selfsup/{train_noise}/units.parquet",
    output:
        adapter=directory("results/{dataset}/finetune/{train_noise}/adapter"),
        loss="results/{dataset}/finetune/{train_noise}/loss.tsv",
        curve="results/{dataset}/finetune/{train_noise}/learning_curve.tsv",
        examples="results/{dataset}/finetune/{train_noise}/sft_train.jsonl",
    log:
        "logs/finetune/{dataset}/{train_noise}.log",
    benchmark:
        "results/benchmarks/finetune/{dataset}/{train_noise}.tsv"
    params:
        finetune=config["finetune"],
        prompt_style=config["prompt"]["style"],
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
