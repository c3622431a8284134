"""Fine-tuning data: the examples of rule finetune come only from train windows that no
held-out self-supervised unit was made from, and each names the item it replaced, as
observed in the window (a user only has the observed log: at rate 0.0 the clean item).

Checked through ``finetune.prepare`` (the selection rule finetune runs) on a log with
train, valid and test windows and injected noise, against the fixture's own windows.
"""
import json

import numpy as np
import pandas as pd
import pytest

from denoise_synth import make_log
from llm4dsr import finetune, prompts
from llm4dsr.finetune.examples import heldout_mask
from llm4dsr.io import write_parquet
from llm4dsr.units import self_supervised_units

N_ITEMS = 40
TITLES = {i: f'Film "{i}" ({1950 + i})' for i in range(1, N_ITEMS + 1)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft_data")
    seq, windows = make_log(n_users=30, length=14, rate=0.2, max_history=5, seed=2)
    assert set(windows["split"]) == {"train", "valid", "test"}
    assert (windows["history"].map(list) != windows["history_clean"].map(list)).any()  # noise to ignore
    counts = np.bincount(seq["item_clean"], minlength=N_ITEMS + 1)[1:]
    write_parquet(pd.DataFrame({"item": np.arange(1, N_ITEMS + 1), "title": list(TITLES.values()),
                                "raw_id": [str(i) for i in TITLES], "count": counts}), tmp / "items.parquet")
    heldout = self_supervised_units(windows, N_ITEMS, 60, seed=5)
    write_parquet(windows, tmp / "windows.parquet")
    write_parquet(heldout, tmp / "heldout.parquet")
    return tmp, windows, heldout


def test_heldout_mask_marks_the_windows_of_the_heldout_units(files):
    _, windows, heldout = files
    mask = heldout_mask(windows, heldout)
    assert mask.sum() == heldout["window"].nunique() == len(heldout)
    assert np.array_equal(mask, windows["window"].isin(heldout["window"]).to_numpy())


@pytest.mark.parametrize("replace_with", ["uniform", "popularity"])
def test_examples_come_from_non_heldout_train_windows(files, replace_with):
    tmp, windows, heldout = files
    cfg = {"samples": 300, "replace_with": replace_with}
    finetune.prepare(tmp / "windows.parquet", tmp / "items.parquet", tmp / "heldout.parquet", cfg, seed=3,
                     out_path=tmp / f"sft_{replace_with}.jsonl")
    examples = [json.loads(line) for line in (tmp / f"sft_{replace_with}.jsonl").read_text().splitlines()]
    assert len(examples) == 300

    # every window's observed sequence (history + target), keyed by (replaced index, the
    # sequence with that index blanked): an example can only have come from these
    eligible = (windows["split"] == "train") & ~windows["window"].isin(heldout["window"])
    sources: dict[tuple, list] = {}
    for w, ok, hist, target in zip(windows["window"], eligible, windows["history"], windows["target"]):
        seq = [int(i) for i in hist] + [int(target)]
        for k in range(len(seq)):
            sources.setdefault((k, tuple(seq[:k] + [None] + seq[k + 1:])), []).append((w, ok, seq[k]))
    used = set()
    for ex in examples:
        items, k = ex["items"], ex["noise_index"]
        found = [(w, orig) for w, ok, orig in sources.get((k, tuple(items[:k] + [None] + items[k + 1:])), []) if ok]
        assert found, f"example {ex} is not a non-held-out train window with one item replaced"
        originals = {orig for _, orig in found}
        assert ex["original"] in originals  # the observed item at the replaced position
        assert items[k] != ex["original"] and items[k] not in items[:k] + items[k + 1:]
        assert ex["candidates"] == [TITLES[i] for i in items]
        assert ex["prompt"] == prompts.prompt(ex["candidates"])
        assert prompts.parse_response(ex["response"]) == (prompts.display_title(TITLES[items[k]]),
                                                          prompts.display_title(TITLES[ex["original"]]))
        used.update(w for w, _ in found)
    assert len(used) > 100  # drawn across the pool, not from a handful of windows


# the learning curve on injected noise: valid units only

def _units(tmp_path):
    rows = []
    for u in range(40):
        for split in ("valid", "test"):
            items = [1 + (u + k) % 20 for k in range(5)]
            noise = [0, 0, 1, 0, 0] if u % 4 else [0] * 5  # a quarter of the units hold no noise
            rows.append({"unit": len(rows), "user": u, "split": split, "window": u, "positions": list(range(5)),
                         "items": items if split == "valid" else [21] * 5, "noise": noise})
    path = tmp_path / "units.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_curve_units_are_valid_units_with_noise_and_clean_items(tmp_path):
    titles = {i: f"Film {i}" for i in range(1, 22)}  # item 21 only in test units
    examples, parts = finetune.valid_units(_units(tmp_path), titles, 12, seed=1, prompt_style="study")
    assert len(examples) == 12 and all("Film 21" not in ex["prompt"] for ex in examples)  # never a test unit
    assert all(0 < m.sum() < len(m) for m in parts["noise"])
    assert all(parts["users"] % 4 != 0)
    again, _ = finetune.valid_units(_units(tmp_path), titles, 12, seed=1, prompt_style="study")
    assert [e["prompt"] for e in again] == [e["prompt"] for e in examples]  # seeded


def test_curve_within_auc_known_answers(tmp_path, monkeypatch):
    from llm4dsr.finetune import objectives

    titles = {i: f"Film {i}" for i in range(1, 22)}
    examples, parts = finetune.valid_units(_units(tmp_path), titles, 30, seed=1, prompt_style="study")
    packed = [{"branches": [0] * (max(b) + 1)} for b in parts["branch_of"]]
    cfg = {"resamples": 200, "level": 0.95}

    def fake(order):  # the noise item's title ranked first (+1) or last (-1)
        def logliks(model, packed_, pad, batch_size=8):
            return [np.where(np.bincount(b, weights=m, minlength=max(b) + 1) > 0, order, 0.0)
                    for b, m in zip(parts["branch_of"], parts["noise"])]
        return logliks

    monkeypatch.setattr(objectives, "candidate_logliks", fake(1.0))
    best = objectives.units_within_auc(None, packed, parts["branch_of"], parts["noise"], parts["users"], 0, cfg)
    assert best["valid_roc_auc_within"] == 1.0 and best["valid_roc_auc_within_ci_low"] == 1.0
    assert best["valid_units"] == 30
    monkeypatch.setattr(objectives, "candidate_logliks", fake(-1.0))
    worst = objectives.units_within_auc(None, packed, parts["branch_of"], parts["noise"], parts["users"], 0, cfg)
    assert worst["valid_roc_auc_within"] == 0.0 and worst["valid_roc_auc_within_ci_high"] == 0.0
