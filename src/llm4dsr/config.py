"""The study's configuration: validated against the schema, the only home of defaults.

``src/llm4dsr/config.schema.yaml`` (package data) documents every key and holds every default.
Its enums of names (noise models, detectors, conditions, backbones, score methods) are
filled from :mod:`llm4dsr.names` when it is loaded, so a name is registered once.

:func:`validate` is what the Snakefile calls before any job: it sets the per-aspect
keys the config leaves out from its ``protocol`` (the schema's ``$defs.protocols``), fills
the other defaults,
turns whole-number floats into integers where the schema wants an integer (and numbers
written as strings, as Snakemake's ``--config key={nested: 1}`` passes them, into
numbers), checks the rules that span several keys, checks that ``llm.base_model`` can
be found (cheaply: nothing is loaded), and fails with one line naming the key. Every library
function then reads the validated config, with no fallback values of its own.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Iterator

import yaml

from llm4dsr import names, sources
from llm4dsr.io import Llm4dsrError

SCHEMA_PATH = Path(__file__).resolve().with_name("config.schema.yaml")  # package data: works from a wheel too

# $defs of the schema whose allowed values come from llm4dsr.names
_NAMED = {
    "noise_setting": {"type": "string", "pattern": f"^{names.NOISE_SETTING}$"},
    "score_method": {"enum": list(names.LLM_METHODS)},
    "detector": {"enum": list(names.DETECTORS)},
    "condition": {"enum": list(names.CONDITIONS)},
    "backbone": {"enum": list(names.BACKBONES)},
    "denoiser": {"enum": list(names.DENOISERS)},
    "source": {"enum": list(names.SOURCES)},
}


class ConfigError(Llm4dsrError):
    """A config value the study cannot run with (one line, naming the key)."""


@functools.cache
def _schema() -> dict:
    if not SCHEMA_PATH.exists():
        raise Llm4dsrError(f"{SCHEMA_PATH}: schema not found (a broken install: reinstall llm4dsr)")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for key, named in _NAMED.items():
        schema["$defs"][key] = {**schema["$defs"].get(key, {}), **named}
    return schema


def schema() -> dict:
    """The schema, its named enums filled in (a copy: callers may change it)."""
    return copy.deepcopy(_schema())


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = {**_schema()["$defs"][node["$ref"].rsplit("/", 1)[1]],
                **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _children(node: dict, value: Any) -> Iterator[tuple[Any, dict]]:
    """(key or index, sub-schema) of each part of ``value`` that ``node`` describes."""
    node = _resolve(node)
    if isinstance(value, dict):
        for key in value:
            sub = node.get("properties", {}).get(key, node.get("additionalProperties"))
            if isinstance(sub, dict):
                yield key, sub
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i in range(len(value)):
            yield i, node["items"]


def _fill_defaults(node: dict, value: Any) -> None:
    node = _resolve(node)
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key not in value and "default" in _resolve(sub):
                value[key] = copy.deepcopy(_resolve(sub)["default"])
    for key, sub in _children(node, value):
        _fill_defaults(sub, value[key])


def _number(text: str) -> int | float | str:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _coerce(node: dict, value: Any) -> Any:
    """10.0 -> 10 where the schema wants an integer (JSON Schema counts 10.0 as one, and
    code that uses it as a count or an index would then fail far from the config);
    "10" -> 10, "0.5" -> 0.5, "null" -> None where the schema wants a number or null and
    no string (Snakemake reads nested ``--config`` values as strings)."""
    types = _resolve(node).get("type")
    types = types if isinstance(types, list) else [types]
    if isinstance(value, str) and "string" not in types and "enum" not in _resolve(node):
        if value in ("null", "~") and "null" in types:
            return None
        if {"integer", "number"} & set(types):
            value = _number(value)
    if isinstance(value, float) and value.is_integer() and "integer" in types:
        return int(value)
    for key, sub in _children(node, value):
        value[key] = _coerce(sub, value[key])
    return value


def protocols() -> dict[str, dict[str, Any]]:
    """protocol name -> {dotted per-aspect key: value} (the schema's ``$defs.protocols``)."""
    return {k: v for k, v in copy.deepcopy(_schema()["$defs"]["protocols"]).items() if k != "description"}


def protocol_keys() -> set[str]:
    """The dotted paths of the schema's per-aspect keys (marked ``x-protocol``)."""
    found: set[str] = set()

    def walk(node: dict, path: tuple) -> None:
        node = _resolve(node)
        if node.get("x-protocol"):
            found.add(".".join(path))
        for key, sub in node.get("properties", {}).items():
            walk(sub, (*path, key))

    walk(_schema(), ())
    return found


def _apply_protocol(cfg: dict, only: str | None = None) -> None:
    """Give each per-aspect key the config does not set the value of ``cfg['protocol']``
    (``only``: the keys of that top-level section alone). An unknown protocol is left to
    the schema's error message; a missing parent section to its own."""
    values = protocols().get(cfg["protocol"]) if isinstance(cfg.get("protocol"), str) else None
    for path, value in (values or {}).items():
        *parents, leaf = path.split(".")
        if only is not None and parents[0] != only:
            continue
        node = cfg
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf not in node:
            node[leaf] = value


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def validate(cfg: dict, source: str = "config.yaml") -> dict:
    """The validated config: a copy with defaults filled, or ConfigError naming the key."""
    import jsonschema

    cfg = copy.deepcopy(cfg) if cfg is not None else {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys, not {type(cfg).__name__}")
    _fill_defaults(_schema(), cfg)  # the per-aspect keys have no default of their own
    _apply_protocol(cfg)
    cfg = _coerce(_schema(), cfg)
    validator = jsonschema.Draft202012Validator(_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if error is not None:
        message = " ".join(error.message.split())
        raise ConfigError(f"{source}: {_where(error.absolute_path)}: {message[:300]}")
    _derive(cfg, source)
    return cfg


def _derive(cfg: dict, source: str) -> None:
    """Rules that span several keys, and the defaults that follow from other keys."""
    from llm4dsr.llm import CHUNKED_MODELS, OFFLINE_MODELS, check_base_model

    for name, entry in cfg["datasets"].items():
        key = f"{source}: datasets.{name}"
        for field in sources.required(entry["source"]):
            if not entry[field]:
                raise ConfigError(f"{key}.{field}: required for source {entry['source']}")
            if entry["source"] != "local":
                continue
            # here, not at the data rule, so the message is one line and no job starts
            path = Path(entry[field])
            if path.is_dir():
                raise ConfigError(f"{key}.{field}: {entry[field]} is a folder, not a CSV file")
            if not path.exists():
                raise ConfigError(f"{key}.{field}: {entry[field]}: no such file (a relative path is read "
                                  f"from the folder snakemake runs in, {Path.cwd()})")
        if entry["max_items_per_user"] is not None and entry["max_items_per_user"] < entry["kcore"]:
            raise ConfigError(f"{key}.max_items_per_user: {entry['max_items_per_user']} is less than kcore "
                              f"{entry['kcore']}: no user could keep kcore interactions")
        if entry["synthetic"] is not None and entry["source"] not in ("amazon2014", "amazon2018"):
            raise ConfigError(f"{key}.synthetic: only for sources amazon2014 and amazon2018, not {entry['source']}")
    threshold = cfg["correct"]["threshold"]
    if threshold["kind"] == "probability":
        for split in ("train", "test"):
            if threshold[split] > 1:
                raise ConfigError(f"{source}: correct.threshold.{split}: {threshold[split]} is not a probability "
                                  f"(0-1) with kind probability; a percentile needs kind percentile")
    llm = cfg["llm"]
    try:
        check_base_model(llm["base_model"], llm["gguf_file"])
    except Llm4dsrError as exc:
        raise ConfigError(f"{source}: llm.base_model: {exc}") from None
    if llm["cpu_kernels"] != "auto":  # a name the build lacks would stop every LLM job
        from llm4dsr.llamacpp import installed_variants

        found = installed_variants()
        if found is None:
            raise ConfigError(f"{source}: llm.cpu_kernels: {llm['cpu_kernels']}: the installed llama.cpp has no "
                              "run-time CPU variants to choose from (use auto)")
        if llm["cpu_kernels"] not in found:
            raise ConfigError(f"{source}: llm.cpu_kernels: {llm['cpu_kernels']} is not a CPU variant of the "
                              f"installed llama.cpp (known: auto, {', '.join(found)})")
    gguf_base = (llm["base_model"] in OFFLINE_MODELS or llm["base_model"] in CHUNKED_MODELS
                 or llm["base_model"].endswith(".gguf") or llm["gguf_file"])
    if cfg["export"]["route"] == "adapter" and not gguf_base:
        raise ConfigError(f"{source}: export.route: adapter needs a GGUF base model, and llm.base_model "
                          f"{llm['base_model']} is a Hugging Face model (use route merged, or set llm.gguf_file)")
    split = cfg["window"]["split"]
    if abs(sum(split) - 1) > 1e-6:
        raise ConfigError(f"{source}: window.split: {split} must sum to 1")
    settings = cfg["noise"]["settings"]
    whole = [s for s in settings if names.noise_rate(s) >= 1]
    if whole:
        raise ConfigError(f"{source}: noise.settings: {whole[0]} replaces every interaction: no history keeps an "
                          f"item of its user, so no detector has a clean item to tell the noise from; use a rate "
                          f"below 1")
    report = cfg["report"]
    if report["noise"] is None:  # the first setting with injected noise
        report["noise"] = next((s for s in settings if names.noise_rate(s) > 0), settings[0])
    if report["noise"] not in settings:
        raise ConfigError(f"{source}: report.noise: {report['noise']!r} is not one of noise.settings {settings}")
    unfitted = [c for c in cfg["backbone"]["conditions"] if c in names.DENOISERS and c not in cfg["denoise"]["methods"]]
    if unfitted:
        raise ConfigError(f"{source}: backbone.conditions: {unfitted} are denoisers missing from denoise.methods "
                          f"{cfg['denoise']['methods']}")
    if cfg["denoise"]["steam"]["p_keep"] + cfg["denoise"]["steam"]["p_delete"] > 1:
        raise ConfigError(f"{source}: denoise.steam: p_keep + p_delete must be at most 1")
    models = cfg["backbone"]["models"]
    if report["sweep_models"] is None:
        report["sweep_models"] = models[:1]
    extra = sorted(set(report["sweep_models"]) - set(models))
    if extra:
        raise ConfigError(f"{source}: report.sweep_models: {extra} are not in backbone.models {models}")
    finetune = cfg["finetune"]
    if finetune["loss_span"] == "sequence" and finetune["objective"] != "generate":
        raise ConfigError(f"{source}: finetune.loss_span: sequence needs finetune.objective generate, "
                          f"not {finetune['objective']}")
    threshold = cfg["correct"]["threshold"]
    if threshold["scale"] in ("logprob", "contrast") and threshold["kind"] != "percentile":
        raise ConfigError(f"{source}: correct.threshold.scale: {threshold['scale']} needs kind percentile (a "
                          f"log-score has no fixed probability to compare with), not {threshold['kind']}")
    export = cfg["export"]
    if export["route"] == "merged" and export["inference_quant"] not in export["quant_types"]:
        raise ConfigError(f"{source}: export.inference_quant: {export['inference_quant']} is not in "
                          f"export.quant_types {export['quant_types']}")


def defaults(section: str, protocol: str = "study") -> dict:
    """The schema's defaults of one top-level section, with the per-aspect values of
    ``protocol`` (for code and tests that build a section by hand:
    ``{**defaults("backbone"), "hidden": 8}``)."""
    node = _resolve(_schema()["properties"][section])
    out: dict = {}
    _fill_defaults(node, out)
    holder = {"protocol": protocol, section: out}
    _apply_protocol(holder, only=section)
    return holder[section]


def backbone_of(section: dict, model: str) -> dict:
    """The validated ``backbone:`` section as model ``model`` trains with it: the shared
    keys, overridden by its own ``backbone.<model>`` values (the other models' sections
    left out)."""
    shared = {k: v for k, v in section.items() if k not in names.BACKBONES}
    return {**shared, **section.get(model, {})}


def dataset(entry: dict) -> dict:
    """One ``datasets:`` entry with the schema's defaults filled (for code and tests that
    read a source outside the workflow)."""
    entry = copy.deepcopy(entry)
    _fill_defaults(_schema()["properties"]["datasets"]["additionalProperties"], entry)
    return entry


def load(path: str | Path) -> dict:
    """Read and validate a config file."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    return validate(cfg, str(path))
