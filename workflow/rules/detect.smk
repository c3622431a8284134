# Detection stage: the contexts detectors score (units), the non-LLM detectors' scores,
# the calibrated combination, and the detection metrics of every detector, LLM included.
# The LLM's scores/llm_*.parquet (on units and on selfsup units) come from rule score.


rule units:
    input:
        sequences="results/{dataset}/{noise}/sequences.parquet",
        windows="results/{dataset}/{noise}/windows.parquet",
    output:
        "results/{dataset}/{noise}/units.parquet",
    log:
        "logs/units/{dataset}/{noise}.log",
    params:
        mode=config["score"]["mode"],
        block=config["score"]["block"],
    priority: 50  # on the critical path (the LLM chain): run before the many backbone jobs
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/units.py"


rule selfsup_units:
    input:
        windows="results/{dataset}/{train_noise}/windows.parquet",
        catalogue="results/{dataset}/data/items.parquet",
    output:
        "results/{dataset}/selfsup/{train_noise}/units.parquet",
    log:
        "logs/selfsup_units/{dataset}/{train_noise}.log",
    params:
        n=config["finetune"]["heldout"],
        seed=config["seed"] + 1,  # not the fine-tuning sample's seed
        replace_with=config["finetune"]["replace_with"],  # as the fine-tuning examples
    priority: 50  # on the critical path (the LLM chain): run before the many backbone jobs
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/selfsup_units.py"


rule detector_scores:
    input:
        unpack(detector_inputs),  # + the item embeddings for llm_embedding (rule embed_items)
    output:
        scores="results/{dataset}/{noise}/scores/{detector}.parquet",
        selfsup="results/{dataset}/{noise}/selfsup/scores/{detector}.parquet",
    wildcard_constraints:
        detector=names.pattern(names.DETECTORS),
    log:
        "logs/detector_scores/{dataset}/{noise}/{detector}.log",
    benchmark:
        "results/benchmarks/detector_scores/{dataset}/{noise}/{detector}.tsv"
    params:
        seed=config["seed"],
    threads: 1  # the ID transformer is tiny: more threads only cost synchronisation
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/detector_scores.py"


rule combine:
    input:
        unpack(combine_inputs),
    output:
        "results/{dataset}/{noise}/scores/{combination}.parquet",
    wildcard_constraints:
        combination=names.pattern(names.COMBINATIONS),
    log:
        "logs/combine/{dataset}/{noise}/{combination}.log",
    params:
        names=lambda wildcards: combined_parts(wildcards.combination),
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/combine.py"


rule detection_metrics:
    input:
        units="results/{dataset}/{noise}/units.parquet",
        scores=expand("results/{{dataset}}/{{noise}}/scores/{detector}.parquet", detector=detection_detectors()),
    output:
        "results/{dataset}/{noise}/detection.json",
    log:
        "logs/detection_metrics/{dataset}/{noise}.log",
    params:
        names=detection_detectors(),
        threshold=config["correct"]["threshold"],
        intervals=config["intervals"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/detection_metrics.py"
