# Score stage (with suggestions): llama.cpp reads each unit's history and the prefix
# `Noise Items: "`; its logits give each item a noise probability (full_title and
# first_token scorers in one pass), and the top-k suspects get a replacement decoded
# from the catalogue trie. The same model scores the held-out self-supervised units.


rule score:
    input:
        unpack(llm_files),
        units="results/{dataset}/{noise}/units.parquet",
        catalogue="results/{dataset}/data/items.parquet",
    output:
        full="results/{dataset}/{noise}/scores/llm_full_title.parquet",
        first="results/{dataset}/{noise}/scores/llm_first_token.parquet",
        suggestions="results/{dataset}/{noise}/suggestions.parquet",
        stats="results/{dataset}/{noise}/score_stats.json",
    log:
        "logs/score/{dataset}/{noise}.log",
    benchmark:
        "results/benchmarks/score/{dataset}/{noise}.tsv"
    params:
        llm=config["llm"],
        score=config["score"],
        suggest=config["suggest"],
        prompt_style=config["prompt"]["style"],
        seed=config["seed"],
    priority: 50  # on the critical path (the LLM chain): run before the many backbone jobs
    threads: config["llm"]["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=config["llm"]["gpus"],
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/score.py"


use rule score as score_selfsup with:
    input:
        unpack(llm_files),
        units="results/{dataset}/selfsup/{train_noise}/units.parquet",
        catalogue="results/{dataset}/data/items.parquet",
    output:
        full="results/{dataset}/selfsup/{train_noise}/scores/llm_full_title.parquet",
        first="results/{dataset}/selfsup/{train_noise}/scores/llm_first_token.parquet",
        stats="results/{dataset}/selfsup/{train_noise}/score_stats.json",
    log:
        "logs/score/{dataset}/selfsup/{train_noise}.log",
    benchmark:
        "results/benchmarks/score/{dataset}/selfsup/{train_noise}.tsv"
