import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers (tiny_llm, denoise_synth)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny random Llama (tests/tiny_llm.py) as a GGUF file, built once per session."""
    from tiny_llm import make_tiny_gguf

    from llm4dsr.llm import resolve

    return resolve(str(make_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")))


@pytest.fixture(scope="session")
def tiny_torch(tiny):
    """A function returning (a fresh copy of the tiny model in torch, its tokenizer): the
    GGUF is read into torch once (seconds); a copy costs a fraction of a second."""
    from llm4dsr.llm import load_torch

    model, tok = load_torch(tiny)

    def fresh():
        return copy.deepcopy(model), tok

    return fresh
