# Config validation, wildcard constraints, and every input function and config lookup
# the rules share. Rules stay thin: each names files and calls one package function.
# Name lists come from llm4dsr.names, defaults from the schema (llm4dsr.config).
import os
import sys

from llm4dsr import config as configuration, names
from llm4dsr.io import Llm4dsrError
from llm4dsr.llm import CHUNKED_MODELS, OFFLINE_MODELS

try:  # fills the schema's defaults; a wrong value stops here, before any job, in one line
    config.update(configuration.validate(config, "config"))
except Llm4dsrError as exc:
    sys.exit(f"error: {exc}")

# llama.cpp's CPU kernels (llm4dsr.llamacpp): every job, local or on a cluster node, inherits
# the choice; a variable the user set wins
if config["llm"]["cpu_kernels"] != "auto":
    os.environ.setdefault("LLM4DSR_CPU_KERNELS", config["llm"]["cpu_kernels"])

DATASETS = list(config["datasets"])
# rule synthetic_raw writes their raw files (rehearsals); rule download fetches the others'
SYNTHETIC = [d for d, entry in config["datasets"].items() if entry["synthetic"] is not None]
NO_MATCH = "(?!)"  # a wildcard constraint that matches nothing (an empty list of names)
NOISES = list(config["noise"]["settings"])
REPORT = config["report"]
FINETUNE = config["finetune"]


def train_noise(noise):
    """The noise setting whose train windows fine-tuned the denoiser that scores `noise`:
    the setting itself (finetune.per_setting) or finetune.noise for every setting."""
    return noise if FINETUNE["per_setting"] else FINETUNE["noise"]


TRAIN_NOISES = list(dict.fromkeys(train_noise(n) for n in NOISES))  # one denoiser each
HF_FOLDER_MODELS = list(OFFLINE_MODELS) + list(CHUNKED_MODELS)  # rule hf_folder writes them as folders


wildcard_constraints:
    dataset=names.pattern(DATASETS),
    noise=names.NOISE_SETTING,
    train_noise=names.NOISE_SETTING,


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def all_outputs():
    """Every final product of the study: built by `snakemake` with no target."""
    targets = []
    for d in DATASETS:
        targets.append(f"results/{d}/data/stats.json")
        targets += [f"results/{d}/export/{t}/parity.json" for t in TRAIN_NOISES]
        targets += [f"results/{d}/{n}/detection.json" for n in NOISES]
    return targets + backbone_tables() + report_outputs()


# detection and correction (detect.smk, correct.smk) ------------------------------------
LLM_MAIN = names.llm_score(config["score"]["method"])  # the LLM score correction and the combination read
LLM_METHODS_RUN = names.scored_methods(config["score"])  # rule score computes these, in this order
LLM_RUN = [names.llm_score(m) for m in LLM_METHODS_RUN]  # the score tables it writes, one per method


def detection_detectors():
    """Every detector in detection.json: the LLM scorers, the baselines, the combinations,
    the published denoisers (their scores come from rule denoise)."""
    return [*LLM_RUN, *config["detectors"], *COMBINATIONS_RUN, *config["denoise"]["methods"]]


# combined_no_embedding only where an LLM detector is configured (it would be combined)
COMBINATIONS_RUN = [c for c in names.COMBINATIONS
                    if c != "combined_no_embedding" or set(config["detectors"]) & set(names.LLM_DETECTORS)]


def combined_parts(combination="combined"):
    """The detectors whose scores are a combined scorer's features (combined_collab: none
    that reads the LLM; combined_no_embedding: the LLM's score, not its embeddings)."""
    plain = [d for d in config["detectors"] if d not in names.LLM_DETECTORS]
    return {"combined": [LLM_MAIN, *config["detectors"]], "combined_collab": plain,
            "combined_no_embedding": [LLM_MAIN, *plain]}[combination]


def detector_inputs(wildcards):
    """Rule detector_scores's inputs: the noise setting's log and units, and the item
    embeddings for a detector that reads them (llm_embedding)."""
    base = f"results/{wildcards.dataset}/{wildcards.noise}"
    inputs = {"sequences": f"{base}/sequences.parquet", "catalogue": f"results/{wildcards.dataset}/data/items.parquet",
              "units": f"{base}/units.parquet", "selfsup_units": selfsup_units(wildcards)}
    if wildcards.detector in names.LLM_DETECTORS:
        inputs["embeddings"] = f"results/{wildcards.dataset}/embed/{train_noise(wildcards.noise)}/items.parquet"
    return inputs


def selfsup_units(wildcards):
    """The held-out self-supervised units of the denoiser that scores wildcards.noise."""
    return f"results/{wildcards.dataset}/selfsup/{train_noise(wildcards.noise)}/units.parquet"


def selfsup_scores(wildcards, name):
    # the LLM scores its own selfsup units once; baselines are fitted per noise setting
    if name in names.LLM_SCORES:
        return f"results/{wildcards.dataset}/selfsup/{train_noise(wildcards.noise)}/scores/{name}.parquet"
    return f"results/{wildcards.dataset}/{wildcards.noise}/selfsup/scores/{name}.parquet"


def combine_inputs(wildcards):
    base = f"results/{wildcards.dataset}/{wildcards.noise}"
    return {
        "units": f"{base}/units.parquet",
        "selfsup_units": selfsup_units(wildcards),
        "scores": [f"{base}/scores/{d}.parquet" for d in combined_parts(wildcards.combination)],
        "selfsup_scores": [selfsup_scores(wildcards, d) for d in combined_parts(wildcards.combination)],
    }


def correct_inputs(wildcards):
    base = f"results/{wildcards.dataset}/{wildcards.noise}"
    inputs = {
        "windows": f"{base}/windows.parquet",
        "sequences": f"{base}/sequences.parquet",
        "units": f"{base}/units.parquet",
        "catalogue": f"results/{wildcards.dataset}/data/items.parquet",
    }
    if wildcards.condition in names.LLM_CONDITIONS:
        inputs["scores"] = f"{base}/scores/{LLM_MAIN}.parquet"
        inputs["suggestions"] = f"{base}/suggestions.parquet"
    elif wildcards.condition == "random":
        inputs["llm_changes"] = f"{base}/correct/llm4dsr/changes.parquet"
    else:
        inputs["scores"] = f"{base}/scores/{wildcards.condition}.parquet"
    return inputs


def denoiser_settings(wildcards):
    """config `denoise.<name>`: the hyperparameters of one published denoiser (denoise.smk)."""
    return config["denoise"][wildcards.denoiser]


# LLM stages (finetune.smk, export.smk, score.smk) ---------------------------------------
# Their outputs are keyed by {train_noise}, the setting whose train windows fine-tuned the
# denoiser: results/{dataset}/finetune/{train_noise}/, export/{train_noise}/, selfsup/{train_noise}/.
def base_model_files(wildcards):
    """The base model folder when a rule writes it (llm.base_model resources/hf/<offline model>,
    rule hf_folder), so that the LLM rules wait for it; nothing for any other base."""
    from llm4dsr.llm import hf_folder_model

    return {"base": config["llm"]["base_model"]} if hf_folder_model(config["llm"]["base_model"]) else {}


def export_outputs(dataset, trained_on):
    """The GGUF files the export route writes."""
    exp = config["export"]
    base = f"results/{dataset}/export/{trained_on}"
    if exp["route"] == "adapter":
        return [f"{base}/adapter.gguf"]
    return [f"{base}/model-{q}.gguf" for q in exp["quant_types"]]


def curve_units(wildcards):
    """The units whose valid split the learning curve scores: those of the main noise
    setting (report.noise) when it injects noise and finetune.curve_units asks for them."""
    if not config["finetune"]["curve_units"] or names.noise_rate(REPORT["noise"]) == 0:
        return {}
    return {"valid_units": f"results/{wildcards.dataset}/{REPORT['noise']}/units.parquet"}


def llm_files(wildcards):
    """The llama.cpp model that scores: the adapter GGUF (applied to the base GGUF at load
    time) or the merged model quantized to export.inference_quant; the denoiser of
    wildcards.noise (rule score) or of wildcards.train_noise (rule score_selfsup)."""
    exp = config["export"]
    trained_on = wildcards.train_noise if "train_noise" in wildcards.keys() else train_noise(wildcards.noise)
    base = f"results/{wildcards.dataset}/export/{trained_on}"
    if exp["route"] == "adapter":
        return {"lora": f"{base}/adapter.gguf"}
    return {"model": f"{base}/model-{exp['inference_quant']}.gguf"}


# backbones (backbone.smk) ---------------------------------------------------------------
def windows_of(dataset, noise, condition):
    """The windows a condition trains and is tested on."""
    base = f"results/{dataset}/{noise}"
    if condition == "noisy":
        return f"{base}/windows.parquet"
    return f"{base}/correct/{condition}/windows.parquet"  # clean: rule clean_windows


def condition_windows(wildcards):
    return windows_of(wildcards.dataset, wildcards.noise, wildcards.condition)


def same_windows_as(noise, condition):
    """The (noise, condition) whose backbone runs train on the very same windows (trained
    once, copied by the other jobs) or None. Clean windows are the same in every noise
    setting (the clean items restored), and at rate 0 nothing is injected, so a setting's
    noisy windows are its clean ones; the copy checks it."""
    same = condition == "clean" or (condition == "noisy" and names.noise_rate(noise) == 0)
    if not same or (noise, condition) == (NOISES[0], "clean"):
        return None
    return NOISES[0], "clean"


def backbone_inputs(wildcards):
    """Rule backbone's windows and catalogue, and the runs it copies when another job
    trains on identical windows (same_windows_as)."""
    inputs = {"windows": condition_windows(wildcards), "catalogue": f"results/{wildcards.dataset}/data/items.parquet"}
    same = same_windows_as(wildcards.noise, wildcards.condition)
    if same is not None:
        noise, condition = same
        inputs["same_windows"] = windows_of(wildcards.dataset, noise, condition)
        inputs["same_runs"] = expand(f"results/{wildcards.dataset}/{noise}/backbone/{wildcards.model}/{condition}/seed{{seed}}.json",
                                     seed=config["backbone"]["seeds"])
    return inputs


def _runs(wildcards, models, conditions):
    """The backbone runs of a results table: each seed's JSON and its test ranks."""
    base = f"results/{wildcards.dataset}/{wildcards.noise}/backbone"
    runs = expand(f"{base}/{{model}}/{{condition}}/seed{{seed}}.json", model=models, condition=conditions,
                  seed=config["backbone"]["seeds"])
    return {"runs": runs, "ranks": [r.replace(".json", ".ranks.parquet") for r in runs]}


def _reference(wildcards, conditions):
    """What a results table's most-popular rows read: each condition's windows, the catalogue."""
    return {"windows": [windows_of(wildcards.dataset, wildcards.noise, c) for c in conditions],
            "catalogue": f"results/{wildcards.dataset}/data/items.parquet"}


def backbone_results(wildcards):
    """Every backbone run of a noise setting, and each denoiser's own recommender (one
    run, seed `seed`, written by rule denoise); the conditions' windows for `mostpop`."""
    runs = _runs(wildcards, config["backbone"]["models"], config["backbone"]["conditions"])
    own = [f"results/{wildcards.dataset}/{wildcards.noise}/denoise/{d}.json" for d in config["denoise"]["methods"]]
    return {"runs": runs["runs"] + own, "ranks": runs["ranks"] + [r.replace(".json", ".ranks.parquet") for r in own],
            **_reference(wildcards, config["backbone"]["conditions"])}


def backbone_tables():
    """The results table of every dataset and noise setting (and the test-selection
    diagnostic's, when backbone.test_selection_diagnostic asks for it)."""
    tables = expand("results/{dataset}/{noise}/results.md", dataset=DATASETS, noise=NOISES)
    if config["backbone"]["test_selection_diagnostic"]:
        tables += expand("results/{dataset}/{noise}/test_selection_gap.md", dataset=DATASETS, noise=NOISES)
    return tables


# report and correction-threshold sweep (report.smk) ------------------------------------
SWEEP_CONDITIONS = [names.sweep_condition(t) for t in REPORT["threshold_sweep"]]  # rule correct_sweep
BACKBONE_CONDITIONS = names.pattern(config["backbone"]["conditions"] + SWEEP_CONDITIONS)
SWEEP_TABLE = ["noisy", *SWEEP_CONDITIONS]  # the sweep table's conditions


def sweep_correct(wildcards):
    """config `correct` with the sweep's percentile threshold on train and test alike (on the
    configured scale)."""
    t = float(wildcards.threshold)
    threshold = {**config["correct"]["threshold"], "kind": "percentile", "train": t, "test": t}
    return {**config["correct"], "threshold": threshold}


def sweep_results(wildcards):
    """The sweep's backbone runs, with `noisy` as the table's reference."""
    return {**_runs(wildcards, REPORT["sweep_models"], SWEEP_TABLE), **_reference(wildcards, SWEEP_TABLE)}


def report_files(wildcards):
    from llm4dsr.report import report_files

    return report_files(wildcards.dataset, NOISES, detection_detectors(), REPORT["noise"], bool(SWEEP_CONDITIONS),
                        train_noise(REPORT["noise"]))


def report_inputs(wildcards):
    """Every workflow output the report notebook reads (llm4dsr.report.report_files)."""
    from llm4dsr.report import flat_files

    return {"notebook": os.path.join(workflow.basedir, "notebooks", "report.ipynb"), **flat_files(report_files(wildcards))}


def report_parameters(wildcards):
    """The notebook's papermill parameters (its `parameters` cell documents each)."""
    return {
        "dataset": wildcards.dataset,
        "inputs": report_files(wildcards),
        "noise_settings": NOISES,
        "main_noise": REPORT["noise"],
        "trained_on": train_noise(REPORT["noise"]),
        "detectors": detection_detectors(),
        "llm_main": LLM_MAIN,
        "objective": config["finetune"]["objective"],
        "threshold": config["correct"]["threshold"],
        "n_examples": REPORT["examples"],
        "seed": config["seed"],
    }


def report_outputs():
    return [f"results/{d}/report/report.html" for d in DATASETS]
