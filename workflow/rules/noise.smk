# Noise stage: clean windows split on the global timeline, then one noise setting
# ("<model>-<rate>") injected per interaction; every setting shares the same windows.


rule noise:
    input:
        interactions="results/{dataset}/data/interactions.parquet",
        catalogue="results/{dataset}/data/items.parquet",
    output:
        sequences="results/{dataset}/{noise}/sequences.parquet",
        windows="results/{dataset}/{noise}/windows.parquet",
        stats="results/{dataset}/{noise}/noise_stats.json",
    log:
        "logs/noise/{dataset}/{noise}.log",
    params:
        window=config["window"],
        seed=config["seed"],
    priority: 50  # upstream of the LLM chain: priority does not propagate to inputs
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/noise.py"
