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
        targets.append(f"results/{d}/export/parity.json")
        targets += [f"results/{d}/{n}/detection.json" for n in NOISES]
    return targets + backbone_tables()


# detection and correction (detect.smk, correct.smk)
LLM_SCORES = ["llm_full_title", "llm_first_token"]
LLM_MAIN = f"llm_{config['score']['method']}"  # the LLM score that correction and the combination read


def detection_detectors():
    """Every detector in detection.json: both LLM scorers, the baselines, the combination."""
    return LLM_SCORES + list(config["detectors"]) + ["combined"]


def combined_parts():
    """The detectors whose scores are the combined scorer's features."""
    return [LLM_MAIN] + list(config["detectors"])


def selfsup_scores(wildcards, name):
    # the LLM scores the (noise-independent) selfsup units once; baselines are fitted per noise
    if name.startswith("llm_"):
        return f"results/{wildcards.dataset}/selfsup/scores/{name}.parquet"
    return f"results/{wildcards.dataset}/{wildcards.noise}/selfsup/scores/{name}.parquet"


def combine_inputs(wildcards):
    base = f"results/{wildcards.dataset}/{wildcards.noise}"
    return {
        "units": f"{base}/units.parquet",
        "selfsup_units": f"results/{wildcards.dataset}/selfsup/units.parquet",
        "scores": [f"{base}/scores/{d}.parquet" for d in combined_parts()],
        "selfsup_scores": [selfsup_scores(wildcards, d) for d in combined_parts()],
    }


# conditions made here (clean and noisy are not corrections)
CORRECTIONS = "llm4dsr|llm4dsr_no_uncertainty|popularity|cooccurrence|idtransformer|random"


def correct_inputs(wildcards):
    base = f"results/{wildcards.dataset}/{wildcards.noise}"
    inputs = {
        "windows": f"{base}/windows.parquet",
        "sequences": f"{base}/sequences.parquet",
        "units": f"{base}/units.parquet",
        "catalogue": f"results/{wildcards.dataset}/data/items.parquet",
    }
    if wildcards.condition in ("llm4dsr", "llm4dsr_no_uncertainty"):
        inputs["scores"] = f"{base}/scores/{LLM_MAIN}.parquet"
        inputs["suggestions"] = f"{base}/suggestions.parquet"
    elif wildcards.condition == "random":
        inputs["llm_changes"] = f"{base}/correct/llm4dsr/changes.parquet"
    else:
        inputs["scores"] = f"{base}/scores/{wildcards.condition}.parquet"
    return inputs


# LLM stages (finetune.smk, export.smk, score.smk)
def export_outputs(dataset):
    """The GGUF files the export route writes."""
    exp = config["export"]
    if exp["route"] == "adapter":
        return [f"results/{dataset}/export/adapter.gguf"]
    return [f"results/{dataset}/export/model-{q}.gguf" for q in exp.get("quant_types", ["Q8_0"])]


def llm_files(wildcards):
    """The llama.cpp model that scores: the adapter GGUF (applied to the base GGUF at load
    time) or the merged model quantized to export.inference_quant."""
    exp = config["export"]
    if exp["route"] == "adapter":
        return {"lora": f"results/{wildcards.dataset}/export/adapter.gguf"}
    return {"model": f"results/{wildcards.dataset}/export/model-{exp.get('inference_quant', 'Q8_0')}.gguf"}


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
