"""The protocol switch (issue 13): one key sets every per-aspect key the config leaves
out; the schema holds both protocols' values; the reference choices that need no model
(prompt text, learning-rate schedule, loss span) on hand-made inputs."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from llm4dsr import config, prompts
from llm4dsr.config import ConfigError
from llm4dsr.finetune import objectives, trainer

ROOT = Path(__file__).resolve().parents[1]


def quick() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def get(cfg: dict, path: str):
    for key in path.split("."):
        cfg = cfg[key]
    return cfg


def test_protocols_set_exactly_the_per_aspect_keys_of_the_schema():
    """Both protocols give a value to every key the schema marks x-protocol, and to no
    other; each value is one the key allows; the two protocols differ on every key."""
    protocols = config.protocols()
    assert set(protocols) == {"study", "reference"}
    keys = config.protocol_keys()
    assert set(protocols["study"]) == set(protocols["reference"]) == keys
    for path in keys:
        node = config.schema()
        for key in path.split("."):
            node = node["properties"][key]
        assert "default" not in node, f"{path}: its default is the protocol's"
        for name, values in protocols.items():
            jsonschema.validate(values[path], node)
        assert protocols["study"][path] != protocols["reference"][path], path


@pytest.mark.parametrize("protocol", ["study", "reference"])
def test_protocol_fills_every_key_the_config_leaves_out(protocol):
    cfg = quick()
    cfg["protocol"] = protocol
    del cfg["backbone"]["ks"]
    cfg["finetune"]["objective"] = "generate"  # the reference's loss span needs it
    out = config.validate(cfg)
    for path, value in config.protocols()[protocol].items():
        assert get(out, path) == value, path


def test_a_key_set_in_the_config_wins_over_the_protocol():
    cfg = quick()
    cfg.update(protocol="reference")
    cfg["finetune"].update(objective="generate", per_setting=False)
    cfg["backbone"]["ks"] = [5, 10, 20]
    out = config.validate(cfg)
    assert out["finetune"]["per_setting"] is False and out["backbone"]["ks"] == [5, 10, 20]
    assert out["backbone"]["objective"] == "bce_all" and out["window"]["construction"] == "full_history"


def test_quick_preset_is_the_study_protocol():
    out = config.load(ROOT / "config.yaml")
    assert out["protocol"] == "study"
    assert all(get(out, k) == v for k, v in config.protocols()["study"].items())


def test_paper_preset_writes_out_the_reference_protocol():
    """config/paper.yaml picks protocol reference and shows every per-aspect key with the
    reference's value, so a reader sees them; model selection stays on validation, and the
    test-selection diagnostic is on."""
    raw = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    assert raw["protocol"] == "reference"
    for path, value in config.protocols()["reference"].items():
        assert get(raw, path) == value, f"config/paper.yaml: {path} is not written out as the reference's {value}"
    out = config.load(ROOT / "config/paper.yaml")
    assert out["backbone"]["test_selection_diagnostic"] is True


@pytest.mark.parametrize("path, value, named", [
    (("protocol",), "paper", "protocol: 'paper' is not one of ['study', 'reference']"),
    (("window", "construction"), "all", "window.construction: 'all'"),
    (("finetune", "loss_span"), "sequence", "finetune.loss_span: sequence needs finetune.objective generate"),
    (("correct", "threshold", "scale"), "logprob", None),
    (("correct", "threshold", "scale"), "contrast", None),
    (("backbone", "objective"), "bpr", "backbone.objective: 'bpr'"),
])
def test_wrong_protocol_values_name_the_key(path, value, named):
    cfg = quick()
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    if named is None:  # a log-score scale with a probability threshold
        cfg["correct"]["threshold"].update(kind="probability", train=0.5, test=0.5)
        named = f"correct.threshold.scale: {value} needs kind percentile"
    with pytest.raises(ConfigError) as err:
        config.validate(cfg, "config.yaml")
    assert named in str(err.value) and "\n" not in str(err.value)


def test_reference_prompt_is_the_reference_codes_training_text():
    text = prompts.prompt(["A (1995)", 'B "x"'], "reference")
    assert text == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request. \n\n"
        "### Instruction:\n" + prompts.REFERENCE_INSTRUCTION + "\n\n"
        "### Input:\nUser Interaction Sequence: \"A (1995)\", \"B 'x'\"\n \n\n"
        "### Response:\nNoise Items: \"")
    assert prompts.REFERENCE_INSTRUCTION.startswith("You are to analyze a list of item titles")
    full = text + prompts.response("B \"x\"", "C")
    assert full.endswith("### Response:\nNoise Items: \"B 'x'\"\nSuggested Replacements: \"C\"")
    assert prompts.prompt(["A"], "study").startswith("### Instruction:\n" + prompts.INSTRUCTION)
    with pytest.raises(ValueError, match="prompt.style"):
        prompts.prompt(["A"], "alpaca")


def test_learning_rate_schedules():
    """constant (study): warmup then flat; linear (reference, the Hugging Face Trainer's):
    lr 0 at the first step, the peak at the end of warmup, 0 at the last step."""
    constant = trainer.lr_factor("constant", 5, 100)
    assert [constant(s) for s in (0, 4, 5, 99)] == [0.2, 1.0, 1.0, 1.0]
    linear = trainer.lr_factor("linear", 20, 2000)
    assert [linear(s) for s in (0, 10, 20, 1010, 2000)] == [0.0, 0.5, 1.0, 0.5, 0.0]


class _Tokenizer:
    """Characters as tokens; BOS 1, EOS 2."""
    eos_token_id = 2

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(ch) for ch in text]}


def test_loss_span_answer_or_whole_sequence():
    ex = [{"prompt": "ab", "response": "cd"}]
    (ids, start), = objectives.tokenize(ex, _Tokenizer(), 64, "answer")
    assert ids == [1, 97, 98, 99, 100, 2] and start == 3  # the loss reads "cd" and EOS
    (ids, start), = objectives.tokenize(ex, _Tokenizer(), 64, "sequence")
    assert start == 0  # every token a model predicts (all but BOS, which nothing predicts)
    _, _, labels = objectives._batch([(ids, start)], [0], 0)
    assert labels[0, 1:].tolist() == ids[1:]


def test_defaults_take_the_protocol():
    assert config.defaults("backbone")["objective"] == "ce_last"
    assert config.defaults("backbone", "reference")["ks"] == [1, 5, 10, 20, 50]
    assert copy.deepcopy(config.defaults("window", "reference"))["construction"] == "full_history"
