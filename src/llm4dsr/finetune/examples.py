"""Self-supervised fine-tuning data: no human labels are needed.

In each sampled train window (history + target, the items as observed in the noise
setting that trains the model: a user only has the observed log) exactly one position
is replaced by a random catalogue item; the model learns to name the replaced title and
the item that was there (prompts.py has the format). At rate 0.0 the observed items
are the clean ones; in a noisy setting they hold that setting's noise, unlabelled, as in
the reference code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import prompts
from ..io import Llm4dsrError, write_text
from ..noise import draw_replacement


def make_examples(windows: pd.DataFrame, titles: dict[int, str], n: int, seed: int,
                  replace_with: str = "uniform", counts: np.ndarray | None = None,
                  style: str = "study") -> list[dict]:
    """``n`` self-supervised examples from train windows (history + target, observed items),
    their prompts in prompt style ``style``.

    One position of each sampled sequence is replaced by a random item not in the sequence;
    ``replace_with`` = ``uniform`` (the paper) or ``popularity`` (drawn by interaction count).
    """
    train = windows[windows["split"] == "train"]
    if train.empty:
        raise Llm4dsrError("finetune: no train windows to build examples from")
    rng = np.random.default_rng(seed)
    rows = train.iloc[rng.choice(len(train), size=n, replace=len(train) < n)]
    if replace_with == "popularity" and counts is None:
        raise ValueError("popularity replacements need item counts")
    n_items = max(titles)
    examples = []
    for history, target in zip(rows["history"], rows["target"]):
        seq = [int(i) for i in history] + [int(target)]
        pos = int(rng.integers(len(seq)))
        original = seq[pos]
        noise = draw_replacement(set(seq), n_items, counts if replace_with == "popularity" else None, rng)
        seq[pos] = noise
        cand = [titles[i] for i in seq]
        examples.append({"prompt": prompts.prompt(cand, style), "response": prompts.response(titles[noise], titles[original]),
                         "noise_index": pos, "items": seq, "original": original, "candidates": cand})
    return examples


def write_examples(examples: list[dict], path: str | Path) -> None:
    write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), path)


def heldout_mask(windows: pd.DataFrame, heldout_units: pd.DataFrame) -> np.ndarray:
    """True for the windows the held-out self-supervised units were made from.

    Those windows never become fine-tuning examples. Their neighbours (the same user's
    overlapping windows) may, just as every train block the model later scores was
    fine-tuning material: the held-out set measures the task on unseen examples, not on
    unseen users. Leaving out all overlapping windows would remove most of a small log.
    """
    held = {(int(u), int(p[-1]) + 1) for u, p in zip(heldout_units["user"], heldout_units["positions"]) if len(p)}
    return np.array([(int(u), int(t)) in held for u, t in zip(windows["user"], windows["target_pos"])], dtype=bool)
