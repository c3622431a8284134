"""Trie decoding follows the model: a stub scorer with known next-token logits (words are
tokens, the logits depend on the last token of the context) must be decoded along its
most likely branch, with the context extended by every token taken."""
import numpy as np

from llm4dsr import prompts
from llm4dsr.suggest import Suggester

TITLES = {1: "Alpha Beta", 2: "Alpha Gamma", 3: "Delta Beta", 4: "Delta"}
VOCAB = ["<prompt>", '"', "Alpha", "Beta", "Gamma", "Delta"]
# next-token logits after each last token; the rest are -10
LOGITS = {
    "<prompt>": {"Alpha": 2.0, "Delta": 1.0, "Beta": 5.0, "Gamma": -5.0},  # Beta/Gamma: not open at the root
    "Alpha": {"Gamma": 3.0, "Beta": 0.0},
    "Delta": {"Beta": 2.0, '"': 1.0},
    "Beta": {'"': 0.0},
    "Gamma": {'"': 0.0},
}


class StubScorer:
    prompt_style = "study"  # config prompt.style, as LlamaScorer carries it

    def __init__(self):
        self.ids = {w: i for i, w in enumerate(VOCAB)}
        self.context: list[int] = []

    def title_tokens(self, title: str) -> list[int]:
        return [self.ids[w] for w in prompts.display_title(title).split()] + [self.ids['"']]

    def prompt_tokens(self, text: str) -> list[int]:
        return [self.ids["<prompt>"]]

    def eval_tokens(self, tokens: list[int], logits_from=None) -> None:
        self.context = list(tokens)

    def last_logprobs(self) -> np.ndarray:
        out = np.full(len(VOCAB), -10.0)
        for word, value in LOGITS.get(VOCAB[self.context[-1]], {}).items():
            out[self.ids[word]] = value
        return out - np.log(np.exp(out).sum())


def test_trie_decoding_takes_the_most_likely_branch():
    sugg = Suggester(StubScorer(), TITLES)
    history = ["Something", "Else"]
    assert sugg.suggest(history, 0, exclude=set()) == (2, "Alpha Gamma")  # Alpha (2 > 1), then Gamma (3 > 0)
    assert sugg.suggest(history, 0, exclude={2}) == (1, "Alpha Beta")  # the best open branch
    assert sugg.suggest(history, 0, exclude={1, 2}) == (3, "Delta Beta")  # after Delta: Beta (2) before the end (1)
    assert sugg.suggest(history, 0, exclude={1, 2, 3}) == (4, "Delta")
