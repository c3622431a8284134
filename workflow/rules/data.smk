# Data stage: raw files (downloaded into resources/ when the source needs it) ->
# preprocessed log, item titles and dataset statistics.
from llm4dsr.data import KNOWN_MD5, raw_files, raw_inputs


rule download:
    output:
        raw="resources/{dataset}/{file}",
        sha256="resources/{dataset}/{file}.sha256",
    log:
        "logs/download/{dataset}/{file}.log",
    params:
        url=lambda w: raw_files(config["datasets"][w.dataset], w.dataset)[w.file],
        md5=lambda w: KNOWN_MD5.get(w.file),
    wildcard_constraints:
        file=r"[^/]+\.(json\.gz|zip)",
    resources:
        runtime=120,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/download.py"


rule data:
    input:
        lambda w: raw_inputs(config["datasets"][w.dataset], w.dataset),
    output:
        interactions="results/{dataset}/data/interactions.parquet",
        catalogue="results/{dataset}/data/items.parquet",
        stats="results/{dataset}/data/stats.json",
    log:
        "logs/data/{dataset}.log",
    params:
        dataset=dataset_cfg,
        window=config["window"],
        seed=config["seed"],
    priority: 50  # upstream of the LLM chain: priority does not propagate to inputs
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/data.py"

