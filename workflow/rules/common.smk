# Config validation, wildcard constraints, and every input function and config lookup
# the rules share. Rules stay thin: each names files and calls one package function.
import re

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

DATASETS = list(config["datasets"])
NOISES = list(config["noise"]["settings"])
PY = "python"  # the interpreter that runs snakemake (no conda needed: see envs/)


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),
    noise=r"(uniform|popularity|confusable)-[0-9]+(\.[0-9]+)?",


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def all_outputs():
    """Every final product of the study: built by `snakemake` with no target."""
    targets = []
    for d in DATASETS:
        targets.append(f"results/{d}/data/stats.json")
        targets += [f"results/{d}/{n}/windows.parquet" for n in NOISES]
    return targets


def condition_windows(wildcards):
    """The windows a condition trains and is tested on."""
    base = f"results/{wildcards.dataset}/{wildcards.noise}"
    if wildcards.condition == "noisy":
        return f"{base}/windows.parquet"
    return f"{base}/correct/{wildcards.condition}/windows.parquet"  # clean: rule clean_windows


def backbone_results(wildcards):
    return expand(
        "results/{dataset}/{noise}/backbone/{model}/{condition}/seed{seed}.json",
        dataset=wildcards.dataset,
        noise=wildcards.noise,
        model=config["backbone"]["models"],
        condition=config["backbone"]["conditions"],
        seed=config["backbone"]["seeds"],
    )


def backbone_tables():
    """The results table of every dataset and noise setting."""
    return expand("results/{dataset}/{noise}/results.md", dataset=DATASETS, noise=NOISES)
