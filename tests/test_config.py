"""Both presets validate against the workflow's schema; a wrong value fails with a
message that names the offending key."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
PRESETS = ["config.yaml", "config/paper.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates(name):
    validate(load(name), SCHEMA)


def test_paper_preset_is_the_papers_recipe():
    cfg = load("config/paper.yaml")
    validate(cfg, SCHEMA)  # fills the schema's defaults
    assert {d["source"] for d in cfg["datasets"].values()} == {"amazon2014"}
    assert cfg["datasets"]["movies"]["kcore"] == 11 and cfg["datasets"]["movies"]["max_items"] == 20000
    assert cfg["finetune"]["lora"] == {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    assert cfg["export"]["route"] == "merged" and cfg["score"]["mode"] == "window"
    assert cfg["window"]["max_eval_windows"] is None


def _set(cfg: dict, path: tuple, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("path, value, named", [
    (("noise", "settings"), ["uniform-2"], "['noise']['settings'][0]"),
    (("finetune", "lora", "r"), -1, "['finetune']['lora']['r']"),
    (("backbone", "models"), ["sasrec", "bert4rec"], "['backbone']['models'][1]"),
    (("llm", "gpus"), -1, "['llm']['gpus']"),
    (("finetune", "replace_with"), "zipf", "['finetune']['replace_with']"),
    (("finetune", "no_such_key"), 1, "'no_such_key' was unexpected"),
])
def test_wrong_value_names_the_key(name, path, value, named):
    with pytest.raises(WorkflowError) as err:
        validate(_set(load(name), path, value), SCHEMA)
    assert named in str(err.value)
