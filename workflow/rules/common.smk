# Config validation, wildcard constraints, and every input function and config lookup
# the rules share. Rules stay thin: each names files and calls one package function.
import os
import re

from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

DATASETS = list(config["datasets"])
NOISES = list(config["noise"]["settings"])


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
    return targets + backbone_tables() + report_outputs()


# detection and correction (detect.smk, correct.smk)
LLM_SCORES = ["llm_full_title", "llm_first_token"]
LLM_MAIN = f"llm_{config['score']['method']}"  # the LLM score that correction and the combination read


# combined: the LLM's score with the simple detectors; combined_collab: the simple
# detectors alone, so that detection.json shows what the LLM adds to the combination
COMBINATIONS = ("combined", "combined_collab")


def detection_detectors():
    """Every detector in detection.json: both LLM scorers, the baselines, the combinations."""
    return LLM_SCORES + list(config["detectors"]) + list(COMBINATIONS)


def combined_parts(combination="combined"):
    """The detectors whose scores are a combined scorer's features."""
    return ([LLM_MAIN] if combination == "combined" else []) + list(config["detectors"])


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
        "scores": [f"{base}/scores/{d}.parquet" for d in combined_parts(wildcards.combination)],
        "selfsup_scores": [selfsup_scores(wildcards, d) for d in combined_parts(wildcards.combination)],
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


# report and correction-threshold sweep (report.smk) ------------------------------------
REPORT = config.get("report", {})
SWEEP = [f"{t:g}" for t in REPORT.get("threshold_sweep", [0, 50, 70, 90])]  # percentiles
SWEEP_CONDITIONS = [f"llm4dsr-p{t}" for t in SWEEP]  # made by rule correct_sweep
BACKBONE_CONDITIONS = "|".join(re.escape(c) for c in config["backbone"]["conditions"] + SWEEP_CONDITIONS)


def report_noise():
    """The setting of the detection curves, the sweep and the examples."""
    injected = [n for n in NOISES if float(n.rsplit("-", 1)[1]) > 0]
    noise = REPORT.get("noise") or (injected or NOISES)[0]
    if noise not in NOISES:
        raise ValueError(f"config.yaml: report.noise {noise!r} is not one of noise.settings {NOISES}")
    return noise


def sweep_models():
    models = REPORT.get("sweep_models") or config["backbone"]["models"][:1]
    extra = sorted(set(models) - set(config["backbone"]["models"]))
    if extra:
        raise ValueError(f"config.yaml: report.sweep_models {extra} are not in backbone.models")
    return models


def sweep_correct(wildcards):
    """config `correct` with the sweep's percentile threshold on train and test alike."""
    t = float(wildcards.threshold)
    return {**config["correct"], "threshold": {"kind": "percentile", "train": t, "test": t}}


def sweep_results(wildcards):
    """The sweep's backbone runs, with `noisy` as the table's reference."""
    return expand(
        "results/{dataset}/{noise}/backbone/{model}/{condition}/seed{seed}.json",
        dataset=wildcards.dataset,
        noise=wildcards.noise,
        model=sweep_models(),
        condition=["noisy", *SWEEP_CONDITIONS],
        seed=config["backbone"]["seeds"],
    )


def report_inputs(wildcards):
    """Every workflow output the report notebook reads."""
    top, main = f"results/{wildcards.dataset}", report_noise()
    inputs = {
        "notebook": os.path.join(workflow.basedir, "notebooks", "report.ipynb"),
        "stats": f"{top}/data/stats.json",
        "catalogue": f"{top}/data/items.parquet",
        "loss": f"{top}/finetune/loss.tsv",
        "detection": [f"{top}/{n}/detection.json" for n in NOISES],
        "results": [f"{top}/{n}/results.csv" for n in NOISES],
        "units": [f"{top}/{n}/units.parquet" for n in NOISES],
        "scores": [f"{top}/{n}/scores/{d}.parquet" for n in NOISES for d in detection_detectors()],
        "changes": f"{top}/{main}/correct/llm4dsr/changes.parquet",
    }
    if SWEEP:
        inputs["sweep"] = f"{top}/{main}/sweep.csv"
    return inputs


def report_parameters(wildcards):
    """The notebook's papermill parameters (its `parameters` cell documents each)."""
    return {
        "dataset": wildcards.dataset,
        "results_dir": "results",
        "noise_settings": NOISES,
        "main_noise": report_noise(),
        "detectors": detection_detectors(),
        "llm_main": LLM_MAIN,
        "objective": config["finetune"].get("objective", "generate"),
        "threshold": config["correct"]["threshold"],
        "n_examples": REPORT.get("examples", 4),
        "seed": config["seed"],
    }


def report_outputs():
    return [f"results/{d}/report/report.html" for d in DATASETS]
