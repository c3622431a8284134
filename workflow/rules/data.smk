# Data stage: raw files (downloaded into resources/ when the source needs it, or, for a
# rehearsal's `synthetic` dataset, written in the source's real format without any
# network) -> preprocessed log, item titles and dataset statistics.
from llm4dsr.sources import known_md5, raw_files, raw_inputs


rule download:
    output:
        raw="resources/{dataset}/{file}",
        sha256="resources/{dataset}/{file}.sha256",
    log:
        "logs/download/{dataset}/{file}.log",
    params:
        url=lambda w: raw_files(config["datasets"][w.dataset], w.dataset)[w.file],
        md5=lambda w: known_md5(config["datasets"][w.dataset], w.file),
    wildcard_constraints:
        dataset=names.pattern([d for d in DATASETS if d not in SYNTHETIC]) or NO_MATCH,
        file=r"[^/]+\.(json\.gz|zip)",
    resources:
        runtime=120,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/download.py"


rule synthetic_raw:
    output:
        "resources/{dataset}/{file}",
    log:
        "logs/synthetic_raw/{dataset}/{file}.log",
    params:
        dataset=dataset_cfg,
        seed=config["seed"],
    wildcard_constraints:
        dataset=names.pattern(SYNTHETIC) or NO_MATCH,
        file=r"[^/]+\.json\.gz",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/llm4dsr.yaml"
    script:
        "../scripts/synthetic_raw.py"


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

