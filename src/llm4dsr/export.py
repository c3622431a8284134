"""Export the fine-tuned model for llama.cpp.

Two routes (config ``export.route``):

* ``adapter``: the LoRA adapter is written as a GGUF LoRA file and llama.cpp applies it
  at load time on top of the very GGUF file the base was trained from. Nothing is
  re-quantized, and the adapter was trained against exactly those dequantized weights.
* ``merged``: the adapter is merged into the weights, written as an f16 GGUF, and
  quantized with llama.cpp's own quantizer (``llama_model_quantize``).

Llama-architecture models are written with the maintained ``gguf`` library, with the
tokenizer metadata copied from the base GGUF (so llama.cpp tokenizes exactly as
before). Other architectures, or bases that are not GGUF, go through llama.cpp's
``convert_hf_to_gguf.py`` that setup.sh unpacks from the llama-cpp-python sdist.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from .io import Llm4dsrError, atomic_path, write_json
from .llm import BaseModel, check_gguf

log = logging.getLogger(__name__)

# HF module name -> GGUF tensor name inside block i
HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
LLAMA_FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}
CONVERTER_DIR = Path(sys.prefix) / "share" / "llama.cpp"


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for q/k projections (rotary halves interleaved per head).

    transformers undoes this when it loads a GGUF, so it is redone on the way back.
    Works for a weight [out, in] and for a LoRA B matrix [out, r] alike.
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(hf_name: str) -> str | None:
    """GGUF tensor name of a Llama HF parameter, or None for one llama.cpp does not store."""
    name = hf_name.removeprefix("model.")
    if name == "embed_tokens.weight":
        return "token_embd.weight"
    if name == "norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    if name.startswith("layers."):
        _, i, rest = name.split(".", 2)
        module, _, param = rest.rpartition(".")
        if module in HF_TO_GGUF:
            return f"blk.{i}.{HF_TO_GGUF[module]}.{param}"
    return None


# transformers model_type -> llama.cpp architecture, for the LoRA adapter route
LLAMA_CPP_ARCH = {"llama": "llama", "gemma3": "gemma3", "gemma3_text": "gemma3"}


def llama_cpp_arch(config) -> str:
    model_type = getattr(config, "model_type", "llama")
    if model_type not in LLAMA_CPP_ARCH:
        raise Llm4dsrError(f"LoRA export: architecture {model_type} is not supported on the adapter route "
                           f"(known: {', '.join(sorted(LLAMA_CPP_ARCH))}); use export.route: merged")
    return LLAMA_CPP_ARCH[model_type]


def _permute_for(hf_name: str, config) -> int | None:
    """Heads to re-permute a q/k weight with: Llama only (llama.cpp's converter permutes
    q/k for the Llama architecture alone)."""
    if getattr(config, "model_type", "llama") != "llama":
        return None
    if "q_proj" in hf_name:
        return config.num_attention_heads
    if "k_proj" in hf_name:
        return config.num_key_value_heads or config.num_attention_heads
    return None


def _copy_tokenizer_metadata(src_gguf: Path, writer) -> None:
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(src_gguf))
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)


def write_llama_gguf(out: str | Path, state_dict: dict, config, tokenizer_gguf: str | Path,
                     ftype: str = "F16", name: str = "llm4dsr") -> Path:
    """Write a Llama-architecture torch state dict as a GGUF file (F32 or F16 weights)."""
    import gguf

    if getattr(config, "model_type", "llama") not in ("llama",):
        raise Llm4dsrError(f"{out}: architecture {config.model_type} is not written directly; "
                           "use a Hugging Face base (convert_hf_to_gguf route)")
    out = Path(out)
    float_type = np.float16 if ftype == "F16" else np.float32
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(name)
        w.add_context_length(config.max_position_embeddings)
        w.add_embedding_length(config.hidden_size)
        w.add_block_count(config.num_hidden_layers)
        w.add_feed_forward_length(config.intermediate_size)
        w.add_head_count(config.num_attention_heads)
        w.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
        w.add_layer_norm_rms_eps(config.rms_norm_eps)
        rope = getattr(config, "rope_parameters", None) or {}
        w.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
        w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
        w.add_vocab_size(config.vocab_size)
        w.add_file_type(LLAMA_FTYPES[ftype])
        _copy_tokenizer_metadata(Path(tokenizer_gguf), w)
        for hf_name, tensor in state_dict.items():
            gname = _gguf_name(hf_name)
            if gname is None or (gname == "output.weight" and config.tie_word_embeddings):
                continue
            arr = tensor.detach().float().cpu().numpy()
            n_head = _permute_for(hf_name, config)
            if n_head:
                arr = permute_rows(arr, n_head)
            w.add_tensor(gname, arr.astype(float_type if arr.ndim == 2 else np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


def write_lora_gguf(out: str | Path, peft_model, alpha: float) -> Path:
    """Write a PEFT LoRA adapter of a Llama or Gemma 3 model as a llama.cpp GGUF adapter."""
    import gguf

    config = peft_model.get_base_model().config
    arch = llama_cpp_arch(config)
    tensors = {}
    for name, tensor in peft_model.state_dict().items():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight
        module = name.split(".lora_")[0].removeprefix("base_model.model.")
        gname = _gguf_name(module + ".weight")
        if gname is None:
            raise Llm4dsrError(f"{out}: LoRA on {module} cannot be exported to llama.cpp")
        arr = tensor.detach().float().cpu().numpy()
        is_b = ".lora_B." in name
        n_head = _permute_for(module, config)
        if is_b and n_head:
            arr = permute_rows(arr, n_head)
        tensors[f"{gname}.lora_{'b' if is_b else 'a'}"] = arr.astype(np.float32)
    if not tensors:
        raise Llm4dsrError(f"{out}: the adapter has no LoRA weights")
    out = Path(out)
    with atomic_path(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_string("general.type", "adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", float(alpha))
        for k in sorted(tensors):
            w.add_tensor(k, tensors[k])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


def quantize(src: str | Path, out: str | Path, qtype: str, threads: int = 2) -> Path:
    """Quantize a GGUF with llama.cpp's own quantizer."""
    from .llamacpp import module

    llama_cpp = module()

    check_gguf(src)
    if qtype not in LLAMA_FTYPES:
        raise Llm4dsrError(f"export.quant_types: unknown type {qtype} (known: {', '.join(LLAMA_FTYPES)})")
    out = Path(out)
    with atomic_path(out) as tmp:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = LLAMA_FTYPES[qtype]
        params.nthread = threads
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise Llm4dsrError(f"{src}: llama.cpp quantization to {qtype} failed (code {rc})")
    return out


def convert_hf(model_dir: str | Path, out: str | Path, outtype: str = "f16") -> Path:
    """Any architecture llama.cpp knows: run its convert_hf_to_gguf.py on a saved HF folder."""
    script = CONVERTER_DIR / "convert_hf_to_gguf.py"
    if not script.exists():
        raise Llm4dsrError(f"{script}: llama.cpp converter missing (run ./setup.sh)")
    out = Path(out)
    with atomic_path(out) as tmp:
        path = os.pathsep.join(p for p in (str(CONVERTER_DIR / "gguf-py"), os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONPATH=path)
        res = subprocess.run([sys.executable, str(script), str(model_dir), "--outfile", str(tmp),
                              "--outtype", outtype], env=env, capture_output=True, text=True)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["?"])[-1]
            raise Llm4dsrError(f"{model_dir}: convert_hf_to_gguf failed: {last}")
    return out


def merged_f16(peft_model, base: BaseModel, out: str | Path, workdir: str | Path, tokenizer=None) -> Path:
    """Merge the adapter and write an f16 GGUF (direct for Llama+GGUF bases, else via the
    converter, which reads the model and ``tokenizer`` saved as a Hugging Face folder)."""
    config = peft_model.get_base_model().config
    if base.gguf and config.model_type != "llama":  # no tokenizer files for the converter to read
        raise Llm4dsrError(f"export.route=merged: a GGUF base of architecture {config.model_type} cannot be "
                           "written back (only Llama can); use export.route: adapter")
    merged = peft_model.merge_and_unload()
    if base.gguf:
        return write_llama_gguf(out, merged.state_dict(), config, base.gguf_path, "F16")
    workdir = Path(workdir)
    merged.save_pretrained(workdir / "merged")
    if tokenizer is not None:  # the converter reads the vocabulary from the folder
        tokenizer.save_pretrained(workdir / "merged")
    return convert_hf(workdir / "merged", out)


def parity(torch_model, tokenizer, gguf_path: str | Path, prompts: list[str], lora_path: str | None,
           qtype: str, threads: int = 2) -> dict:
    """Compare llama.cpp's next-token logits with torch's on a few prompts.

    Returns per-prompt correlation, top-1 agreement and max abs difference, and ``ok``
    against a tolerance suited to the weights' quantization.
    """
    import torch

    from .llamacpp import module

    Llama = module().Llama

    min_corr = {"F32": 0.999, "F16": 0.999, "Q8_0": 0.99, "Q4_1": 0.95}.get(qtype, 0.9)
    llm = Llama(model_path=str(gguf_path), lora_path=lora_path, n_ctx=1024, n_threads=threads,
                logits_all=True, verbose=False)
    rows = []
    torch_model.eval()
    for text in prompts:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]  # BOS if the model uses one
        with torch.no_grad():
            t_logits = torch_model(torch.tensor([ids])).logits[0, -1].float().numpy()
        llm.reset()
        llm.eval(ids)
        c_logits = np.asarray(llm.scores[len(ids) - 1], dtype=np.float32)
        corr = float(np.corrcoef(t_logits, c_logits)[0, 1])
        rows.append({"tokens": len(ids), "corr": corr, "top1_same": bool(t_logits.argmax() == c_logits.argmax()),
                     "max_abs_diff": float(np.abs(t_logits - c_logits).max())})
    ok = all(r["corr"] >= min_corr for r in rows)
    return {"quant": qtype, "min_corr_required": min_corr, "prompts": rows, "ok": ok}


def run(adapter_dir: str | Path, base: BaseModel, route: str, out_dir: str | Path, quant_types: list[str],
        parity_prompts: list[str], threads: int = 2, dtype: str = "float32") -> dict:
    """Export the adapter in ``adapter_dir`` as the config asks; write parity.json; fail on disagreement."""
    from peft import PeftModel

    from .llm import load_torch

    out_dir = Path(out_dir)
    model, tok = load_torch(base, dtype)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    alpha = peft_model.peft_config["default"].lora_alpha
    if route == "adapter":
        if not base.gguf:
            raise Llm4dsrError("export.route=adapter needs a GGUF base model (llm.base_model); use route: merged")
        lora = write_lora_gguf(out_dir / "adapter.gguf", peft_model, alpha)
        report = parity(peft_model, tok, base.gguf_path, parity_prompts, str(lora), _base_qtype(base.gguf_path),
                        threads)
        report["model"], report["lora"] = str(base.gguf_path), str(lora)
    else:
        f16 = merged_f16(peft_model, base, out_dir / "model-F16.gguf", out_dir, tok)
        model_for_parity = peft_model.get_base_model()  # merged in place by merge_and_unload
        report = {"quantized": {}}
        for q in quant_types:
            path = f16 if q == "F16" else quantize(f16, out_dir / f"model-{q}.gguf", q, threads)
            report["quantized"][q] = parity(model_for_parity, tok, path, parity_prompts, None, q, threads)
        report["ok"] = all(r["ok"] for r in report["quantized"].values())
    write_json(report, out_dir / "parity.json")
    if not report["ok"]:
        raise Llm4dsrError(f"{out_dir / 'parity.json'}: llama.cpp logits disagree with torch beyond tolerance")
    return report


def _base_qtype(path: Path) -> str:
    """Name of the dominant quantization of a GGUF (for the parity tolerance)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    counts: dict[str, int] = {}
    for t in reader.tensors:
        if len(t.shape) == 2:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return max(counts, key=counts.get) if counts else "F32"


def run_from_config(adapter_dir, llm_cfg: dict, export_cfg: dict, out_dir, prompt_style: str,
                    threads: int = 2) -> dict:
    """The workflow step: export as ``export.route`` says, with parity prompts in the
    configured prompt style (config `prompt.style`)."""
    from . import prompts
    from .llm import resolve

    quants = list(export_cfg["quant_types"])
    if export_cfg["route"] == "merged" and export_cfg["inference_quant"] not in quants:
        raise Llm4dsrError(f"export.inference_quant={export_cfg['inference_quant']}: not in export.quant_types")
    titles = ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Sabrina (1954)", "Jumanji (1995)"]
    n = export_cfg["parity_prompts"]
    texts = [prompts.prompt(titles[k:] + titles[:k], prompt_style) for k in range(n)]
    base = resolve(llm_cfg["base_model"], llm_cfg["gguf_file"])
    return run(adapter_dir, base, export_cfg["route"], out_dir, quants, texts, threads, llm_cfg["dtype"])
