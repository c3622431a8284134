"""The config: both presets validate; a wrong value fails in one line naming the key;
the schema is the only home of defaults and llm4dsr.names the only home of names."""
from __future__ import annotations

import ast
import copy
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from llm4dsr import config, names
from llm4dsr.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["config.yaml", "config/paper.yaml"]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates(name):
    config.load(ROOT / name)


def test_paper_preset_is_the_papers_recipe():
    cfg = config.load(ROOT / "config/paper.yaml")
    assert cfg["datasets"]["toys"]["source"] == "amazon2014"  # the reference's Toy data: the 2014 release
    assert cfg["datasets"]["movies"]["source"] == "amazon2018"  # its Movie targets reach 2018
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
    (("noise", "settings"), ["uniform-2"], "noise.settings[0]: 'uniform-2'"),
    (("finetune", "lora", "r"), -1, "finetune.lora.r: -1"),
    (("backbone", "models"), ["sasrec", "bert4rec"], "backbone.models[1]: 'bert4rec'"),
    (("llm", "gpus"), -1, "llm.gpus: -1"),
    (("finetune", "replace_with"), "zipf", "finetune.replace_with: 'zipf'"),
    (("finetune", "no_such_key"), 1, "finetune: Additional properties are not allowed ('no_such_key' was unexpected)"),
    (("window", "split"), [0.8, 0.1, 0.2], "window.split: [0.8, 0.1, 0.2] must sum to 1"),
    (("report", "noise"), "uniform-0.5", "report.noise: 'uniform-0.5' is not one of noise.settings"),
    (("report", "sweep_models"), ["caser", "gru4rec", "sasrec", "nope"], "report.sweep_models[3]: 'nope'"),
    (("denoise", "methods"), ["steam", "dros"], "denoise.methods[1]: 'dros'"),
    (("denoise", "methods"), [], "backbone.conditions: ['hsd', 'steam'] are denoisers missing from denoise.methods"),
    (("denoise", "steam"), {"p_delete": 0.7}, "denoise.steam: p_keep + p_delete must be at most 1"),
    (("llm", "cpu_kernels"), "avx9", "llm.cpu_kernels: avx9"),  # a variant the build lacks
    (("llm", "cpu_kernels"), "../lib", "llm.cpu_kernels: '../lib' does not match"),
])
def test_wrong_value_names_the_key_in_one_line(name, path, value, named):
    with pytest.raises(ConfigError) as err:
        config.validate(_set(load(name), path, value), name)
    message = str(err.value)
    assert message.startswith(f"{name}: ") and named in message and "\n" not in message


def test_a_cpu_kernel_variant_of_the_installed_build_can_be_forced():
    from llm4dsr.llamacpp import installed_variants

    found = installed_variants()
    if not found:
        pytest.skip("this llama.cpp build has no run-time CPU variants")
    cfg = load("config.yaml")
    cfg["llm"]["cpu_kernels"] = sorted(found)[0]
    assert config.validate(cfg)["llm"]["cpu_kernels"] == sorted(found)[0]
    assert config.validate(load("config.yaml"))["llm"]["cpu_kernels"] == "auto"


def test_a_local_source_needs_its_files():
    cfg = load("config.yaml")
    cfg["datasets"] = {"mine": {"source": "local", "items": "items.csv"}}
    with pytest.raises(ConfigError, match="datasets.mine.interactions: required for source local"):
        config.validate(cfg)


def test_defaults_are_filled_and_whole_number_floats_become_integers():
    cfg = load("config.yaml")
    del cfg["backbone"]["hidden"]
    cfg["window"]["max_history"] = 10.0
    cfg["backbone"]["seeds"] = [0.0, 1.0]
    out = config.validate(cfg)
    assert out["backbone"]["hidden"] == 64 and out["export"]["parity_prompts"] == 3
    assert type(out["window"]["max_history"]) is int and [type(s) for s in out["backbone"]["seeds"]] == [int, int]
    assert type(out["finetune"]["lr"]) is float  # numbers stay numbers
    assert cfg["window"]["max_history"] == 10.0 and "hidden" not in cfg["backbone"]  # the input is not changed


def test_schema_enums_are_the_registered_names():
    """The schema's name lists come from llm4dsr.names, and the code's registries agree."""
    from llm4dsr import detectors, registry
    from llm4dsr.backbones import MODELS

    defs = config.schema()["$defs"]
    assert defs["detector"]["enum"] == list(names.DETECTORS)
    assert defs["condition"]["enum"] == list(names.CONDITIONS)
    assert defs["backbone"]["enum"] == list(names.BACKBONES) == list(MODELS)
    assert defs["denoiser"]["enum"] == list(names.DENOISERS)
    assert defs["source"]["enum"] == list(names.SOURCES)
    for family, members in registry.FAMILIES.items():  # every registered name has its module and entry point
        for name in members.names:
            member = registry.get(family, name)
            assert callable(member) or callable(member.read), (family, name)
    assert set(config.schema()["properties"]["denoise"]["properties"]) == {"methods", "threads", *names.DENOISERS}
    assert defs["score_method"]["enum"] == list(names.LLM_METHODS)
    assert re.fullmatch(defs["noise_setting"]["pattern"], "confusable-0.25")
    assert all(re.fullmatch(names.NOISE_SETTING, f"{m}-0.1") for m in names.NOISE_MODELS)
    assert set(detectors._registered()) == set(names.DETECTORS)
    assert set(names.CONDITIONS) >= {*names.REFERENCE_CONDITIONS, *names.LLM_CONDITIONS, *names.DETECTORS, "random",
                                     *names.DENOISERS}
    assert set(names.LABELS) >= {*names.LLM_SCORES, *names.DETECTORS, *names.COMBINATIONS, *names.DENOISERS}


def _schema_keys() -> set[str]:
    keys: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config.schema())
    return keys


def test_no_config_default_is_written_outside_the_schema():
    """Code reads the validated config: a `.get("<config key>", fallback)` or a dict of
    mirrored defaults would be a second home for a default, and they drift apart."""
    keys = _schema_keys()
    found = []
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "workflow").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    files.remove(ROOT / "src" / "llm4dsr" / "config.py")  # it walks the schema itself
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys
                    and ast.unparse(node.func.value) not in ("snakemake.input", "snakemake.output", "inp", "registry")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .get({node.args[0].value!r})")
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and "DEFAULTS" in t.id for t in node.targets):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: a DEFAULTS table")
    for path in (ROOT / "workflow").rglob("*.smk"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for key in re.findall(r"""\.get\(\s*["']([a-z_]+)["']""", line):
                if key in keys:
                    found.append(f"{path.relative_to(ROOT)}:{n}: .get({key!r})")
    assert not found, "\n".join(found)


def test_a_backbone_section_overrides_the_shared_keys_for_that_model_only():
    cfg = {"backbone": {"models": ["sasrec", "gru4rec"], "conditions": ["clean"], "seeds": [0],
                        "layers": 2, "gru4rec": {"layers": 1, "dropout": 0.3}}}
    section = config.validate({**config.load(ROOT / "config.yaml"), **cfg})["backbone"]
    gru, sas = config.backbone_of(section, "gru4rec"), config.backbone_of(section, "sasrec")
    assert (gru["layers"], gru["dropout"], sas["layers"], sas["dropout"]) == (1, 0.3, 2, section["dropout"])
    assert not set(names.BACKBONES) & set(gru)  # no model's own section leaks into another's
    with pytest.raises(config.ConfigError, match="gru4rec"):
        config.validate({**config.load(ROOT / "config.yaml"),
                         "backbone": {**cfg["backbone"], "gru4rec": {"heads_typo": 1}}})


def test_the_package_runs_from_an_installed_wheel(tmp_path):
    """The schema is package data: llm4dsr validates a config from a wheel, outside a checkout."""
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", src)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "whl")], check=True, capture_output=True, timeout=300)
    with zipfile.ZipFile(next((tmp_path / "whl").glob("llm4dsr-*.whl"))) as wheel:
        wheel.extractall(tmp_path / "site")
    (tmp_path / "c.yaml").write_text((ROOT / "config.yaml").read_text())
    code = "from llm4dsr import config; print(config.SCHEMA_PATH); print(config.load('c.yaml')['backbone']['hidden'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert out.returncode == 0, out.stderr[-2000:]
    schema, hidden = out.stdout.split()
    assert schema == str(tmp_path / "site" / "llm4dsr" / "config.schema.yaml") and hidden == "64"
