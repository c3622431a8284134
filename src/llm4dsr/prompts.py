"""The prompt and answer format shared by fine-tuning, scoring and suggestion.

The format follows the paper (Alpaca-style instruction, input, response):

    ### Instruction: <task>
    ### Input: User Interaction Sequence: "t1", "t2", ...
    ### Response: Noise Items: "<noise title>"
    Suggested Replacements: "<replacement title>"

Two styles (config ``prompt.style``): ``study``, a short instruction in a compact template,
and ``reference``, the reference code's text (its Alpaca preamble, blank lines, the
paper's instruction, and the newline-space that ends its input). The answer is the same
in both. Titles are shown with double quotes turned into single quotes, so that the
closing quote always ends a title and an answer can be parsed back unambiguously.
"""
from __future__ import annotations

import re

INSTRUCTION = (
    "One item in the user's interaction sequence does not match the user's interests. "
    "Name that noise item and suggest the item that should replace it."
)
# The reference code's training text (train_denoise_model.py, generate_noise_data.py). Its
# scoring prompts differ from its training text (two spaces after the preamble, a single
# quote after `Noise Items: `): flaws not copied, the training text is used throughout.
REFERENCE_PREAMBLE = ("Below is an instruction that describes a task, paired with an input that provides "
                      "further context. Write a response that appropriately completes the request. ")
REFERENCE_INSTRUCTION = (
    "You are to analyze a list of item titles provided by a user. Your task is to identify any item(s) "
    "that do not align with the main interests reflected by the majority of the items. After identifying "
    "these noise items, suggest alternative items that better match the user's interests."
)
STYLES = ("study", "reference")
NOISE_PREFIX = 'Noise Items: "'
SUGGEST_PREFIX = '"\nSuggested Replacements: "'
END = '"'


def display_title(title: str) -> str:
    """The form of a title inside prompts: one line, no double quotes."""
    return " ".join(title.replace('"', "'").split())


def prompt(titles: list[str], style: str = "study") -> str:
    """The prompt for a history, ending with the response prefix `Noise Items: "`."""
    if not titles:
        raise ValueError("empty history: nothing to score")
    seq = ", ".join(f'"{display_title(t)}"' for t in titles)
    if style == "reference":
        return (f"{REFERENCE_PREAMBLE}\n\n### Instruction:\n{REFERENCE_INSTRUCTION}\n\n### Input:\n"
                f"User Interaction Sequence: {seq}\n \n\n### Response:\n{NOISE_PREFIX}")
    if style != "study":
        raise ValueError(f"prompt.style: {style!r} is not one of {STYLES}")
    return (f"### Instruction:\n{INSTRUCTION}\n### Input:\nUser Interaction Sequence: {seq}\n"
            f"### Response:\n{NOISE_PREFIX}")


def suggestion_prompt(titles: list[str], noise_title: str, style: str = "study") -> str:
    """The prompt that asks for a replacement of ``noise_title``."""
    return prompt(titles, style) + display_title(noise_title) + SUGGEST_PREFIX


def response(noise_title: str, replacement_title: str) -> str:
    """The training target that follows :func:`prompt` (which already holds `Noise Items: "`)."""
    return display_title(noise_title) + SUGGEST_PREFIX + display_title(replacement_title) + END


_ANSWER = re.compile(r'^(?P<noise>[^"\n]*)"\s*\nSuggested Replacements: "(?P<repl>[^"\n]*)"')


def parse_response(text: str) -> tuple[str, str] | None:
    """(noise title, replacement title) from a generated response, or None if it does not parse."""
    m = _ANSWER.match(text)
    if not m:
        return None
    return m.group("noise").strip(), m.group("repl").strip()
