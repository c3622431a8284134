"""Every name list of the study, in one place.

The schema's enums (llm4dsr.config), the Snakemake wildcard constraints and input
functions (workflow/rules/common.smk), the correction stage and the report's labels and
colours all derive from these lists; tests/test_config.py checks that they agree.

Adding a detector: its class in detectors.py (``name`` = its key here), its entry in
DETECTORS below (the label figures show), and its test. It then becomes a config
``detectors`` value, a correction condition and a row of every detection table.

Adding a published denoiser: its module in denoisers/ (a Denoiser, ``name`` = its key
here), its entry in DENOISERS below, its hyperparameters under ``denoise.<name>`` in the
schema, and its test. It then becomes a ``denoise.methods`` value, a condition, a row of
every detection table and, with its own recommender, a model of the results table.
"""
from __future__ import annotations

import re

# --------------------------------------------------------------------------- splits
SPLITS = ("train", "valid", "test")
EVAL_SPLITS = ("valid", "test")  # histories only: their targets are labels, never shown nor changed
# The train period of the interaction log: train targets, and interactions that are no
# window's target ("none": a user's first item). Train units and detectors see only these.
TRAIN_PERIOD = ("train", "none")

# --------------------------------------------------------------------------- data sources
# source name -> its module in llm4dsr/sources/ (a module reads a family of releases)
SOURCES = {"ml-latest-small": "movielens", "ml-100k": "movielens", "ml-1m": "movielens",
           "amazon2014": "amazon", "amazon2018": "amazon", "local": "local"}

# --------------------------------------------------------------------------- noise
NOISE_MODELS = ("uniform", "popularity", "confusable")
NOISE_SETTING = rf"({'|'.join(NOISE_MODELS)})-(0(\.[0-9]+)?|1(\.0+)?)"  # "<model>-<rate in [0, 1]>"


def noise_rate(setting: str) -> float:
    """``"popularity-0.1"`` -> 0.1."""
    return float(setting.rsplit("-", 1)[1])


# --------------------------------------------------------------------------- detectors
# LLM scores: one score table per scoring method (score.py), named llm_<method>.
LLM_METHODS = ("trie", "first_token", "full_title")


def llm_score(method: str) -> str:
    return f"llm_{method}"


LLM_SCORES = tuple(llm_score(m) for m in LLM_METHODS)


def scored_methods(score_cfg: dict) -> list[str]:
    """The LLM scoring methods one run computes: config `score.method` first (it drives
    correction and the suggestions' order), then `score.compare`."""
    return list(dict.fromkeys([score_cfg["method"], *score_cfg["compare"]]))

# Detectors other than the LLM's scores (detectors.py), name -> label.
DETECTORS = {"popularity": "popularity", "cooccurrence": "co-occurrence", "idtransformer": "ID transformer",
             "llm_embedding": "LLM (title embedding)"}
# Detectors that read the LLM (its title embeddings: rule embed_items): "combined_collab" leaves them out.
LLM_DETECTORS = ("llm_embedding",)

# Calibrated combinations (combine.py): "combined" adds the LLM's main score to the
# configured detectors; "combined_collab" leaves out everything that reads the LLM, so the
# gap is what the LLM adds; "combined_no_embedding" (only when an LLM detector is
# configured) leaves out the LLM detectors alone, so the gap is what they add.
COMBINATIONS = ("combined", "combined_collab", "combined_no_embedding")

# Published denoisers (denoisers/), name -> label: each is fitted per dataset and noise
# setting (rule denoise), scores the units as a detector does, corrects the windows
# itself (a condition) and has its own recommender (a model of the results table).
DENOISERS = {"hsd": "HSD", "steam": "STEAM"}

LABELS = {"llm_trie": "LLM (title trie)", "llm_full_title": "LLM (whole title)", "llm_first_token": "LLM (first token)",
          **DETECTORS, "combined": "combined (calibrated)", "combined_collab": "combined, no LLM",
          "combined_no_embedding": "combined, no embedding", **DENOISERS}

# --------------------------------------------------------------------------- conditions
# What a backbone is trained and tested on. clean and noisy are the data as they are;
# the corrections are made by the correction stage (rule correct), the denoisers'
# conditions by the denoisers themselves (rule denoise).
REFERENCE_CONDITIONS = ("clean", "noisy")
LLM_CONDITIONS = ("llm4dsr", "llm4dsr_no_uncertainty")
CORRECTIONS = (*LLM_CONDITIONS, *DETECTORS, "random")
CONDITIONS = (*REFERENCE_CONDITIONS, *CORRECTIONS, *DENOISERS)
SWEEP_CONDITION = re.compile(r"llm4dsr-p([0-9]+(?:\.[0-9]+)?)")  # the threshold sweep's llm4dsr-p<T>


def sweep_condition(threshold: float) -> str:
    return f"llm4dsr-p{threshold:g}"


# --------------------------------------------------------------------------- backbones
BACKBONES = ("sasrec", "gru4rec", "caser", "fmlprec")


def pattern(names) -> str:
    """A regular expression matching exactly one of ``names`` (for wildcard constraints)."""
    return "|".join(re.escape(n) for n in names)
