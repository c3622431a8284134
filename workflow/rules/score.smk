# Score stage (with suggestions): llama.cpp reads each unit's history and the prefix
# `Noise Items: "`; its logits give each item a noise probability (config score.method
# and score.compare, in one pass), and the most suspected items (no more than correction
# can change) get a replacement decoded from the catalogue trie. The same model scores
# the held-out self-supervised units; rule embed_items embeds every title once with it
# (the llm_embedding detector).


rule score:
    input:
        unpack(llm_files),
        units="results/{dataset}/{noise}/units.parquet",
        catalogue="results/{dataset}/data/items.parquet",
    output:
        scores=expand("results/{{dataset}}/{{noise}}/scores/{name}.parquet", name=LLM_RUN),
        suggestions="results/{dataset}/{noise}/suggestions.parquet",
        stats="results/{dataset}/{noise}/score_stats.json",
    log:
        "logs/score/{dataset}/{noise}.log",
    benchmark:
        "results/benchmarks/score/{dataset}/{noise}.tsv"
    params:
        llm=config["llm"],
        methods=LLM_METHODS_RUN,  # config score.method, then score.compare: output.scores, in order
        suggest=config["suggest"],
        max_per_sequence=config["correct"]["max_per_sequence"],
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


rule embed_items:
    input:
        unpack(llm_files),
        catalogue="results/{dataset}/data/items.parquet",
    output:
        "results/{dataset}/embed/{train_noise}/items.parquet",
    log:
        "logs/embed_items/{dataset}/{train_noise}.log",
    benchmark:
        "results/benchmarks/embed_items/{dataset}/{train_noise}.tsv"
    params:
        llm=config["llm"],
    priority: 50
    threads: config["llm"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["llm"]["gpus"],
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/embed_items.py"


use rule score as score_selfsup with:
    input:
        unpack(llm_files),
        units="results/{dataset}/selfsup/{train_noise}/units.parquet",
        catalogue="results/{dataset}/data/items.parquet",
    output:
        scores=expand("results/{{dataset}}/selfsup/{{train_noise}}/scores/{name}.parquet", name=LLM_RUN),
        stats="results/{dataset}/selfsup/{train_noise}/score_stats.json",
    log:
        "logs/score/{dataset}/selfsup/{train_noise}.log",
    benchmark:
        "results/benchmarks/score/{dataset}/selfsup/{train_noise}.tsv"
