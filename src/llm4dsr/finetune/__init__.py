"""Fine-tuning stage: self-supervised LoRA fine-tuning (the paper's first contribution).

examples.py makes the training data, objectives.py tokenizes it and defines the two
losses, trainer.py runs LoRA training with resumable checkpoints; :func:`run` is the
workflow step of rule finetune.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import prompts
from ..io import read_catalogue, read_parquet
from .examples import heldout_mask, make_examples, write_examples
from .objectives import tokenize_candidates, units_within_auc
from .trainer import train

log = logging.getLogger(__name__)


def prepare(windows_path, items_path, heldout_units_path, ft_cfg: dict, seed: int, out_path,
            prompt_style: str = "study"):
    """The fine-tuning data of rule finetune: ``ft_cfg["samples"]`` examples drawn from the
    observed train windows that no held-out self-supervised unit was made from, their
    prompts in ``prompt_style``, written to ``out_path`` (sft_train.jsonl). Returns
    (examples, held-out units, catalogue)."""
    windows = read_parquet(windows_path, ["split", "user", "target_pos", "history", "target"])
    catalogue = read_catalogue(items_path)
    heldout = read_parquet(heldout_units_path, ["user", "positions", "items", "noise"])
    pool = windows[~heldout_mask(windows, heldout)]
    log.info("%d train windows, %d left after removing the %d held-out ones",
             int((windows["split"] == "train").sum()), int((pool["split"] == "train").sum()), len(heldout))
    examples = make_examples(pool, catalogue.titles, ft_cfg["samples"], seed, ft_cfg["replace_with"],
                             catalogue.counts, prompt_style)
    write_examples(examples, out_path)
    return examples, heldout, catalogue


def valid_units(units_path, titles: dict[int, str], n: int, seed: int, prompt_style: str) -> tuple[list, dict]:
    """The learning curve's injected-noise units: a seeded sample of ``n`` valid-split units
    of ``units_path`` holding both noise and clean items, as candidate examples (prompt,
    the history's titles) and, per unit, each item's title branch, noise mask and user."""
    from ..streams import rng_for

    units = read_parquet(units_path, ["unit", "user", "split", "items", "noise"])
    mixed = units["noise"].map(lambda m: 0 < int(np.sum(m)) < len(m))
    pool = units[(units["split"] == "valid") & mixed].reset_index(drop=True)  # never test
    if len(pool) > n:
        pool = pool.iloc[np.sort(rng_for(seed, "curve-valid-units").choice(len(pool), n, replace=False))]
    examples, branch_of = [], []
    for items in pool["items"]:
        shown = [titles[int(i)] for i in items]
        distinct = list(dict.fromkeys(shown))
        examples.append({"prompt": prompts.prompt(shown, prompt_style), "candidates": shown, "noise_index": 0})
        branch_of.append(np.array([distinct.index(t) for t in shown]))
    return examples, {"branch_of": branch_of, "noise": [np.asarray(m) for m in pool["noise"]],
                      "users": pool["user"].to_numpy()}


def run(windows_path, items_path, heldout_units_path, llm_cfg: dict, ft_cfg: dict, seed: int,
        out_dir, prompt_style: str, threads: int | None = None, intervals_cfg: dict | None = None,
        valid_units_path=None) -> dict:
    """The workflow step of rule finetune: build the examples from the observed train
    windows of ``windows_path``, LoRA-train the base model. ``llm_cfg``, ``ft_cfg`` and
    ``intervals_cfg`` are the config's validated `llm`, `finetune` and `intervals` sections,
    ``prompt_style`` its `prompt.style`. With ``valid_units_path`` (the units of the main
    injected-noise setting), each learning-curve point also scores ``curve_units`` of its
    valid units (:func:`valid_units`): the within-history ROC-AUC the study measures."""
    from ..llm import load_torch, resolve

    out_dir = Path(out_dir)
    examples, heldout, catalogue = prepare(windows_path, items_path, heldout_units_path, ft_cfg, seed,
                                           out_dir / "sft_train.jsonl", prompt_style)
    titles = catalogue.titles

    base = resolve(llm_cfg["base_model"], llm_cfg["gguf_file"])
    model, tok = load_torch(base, llm_cfg["dtype"])
    held = [{"prompt": prompts.prompt([titles[int(i)] for i in its], prompt_style), "candidates": [titles[int(i)] for i in its],
             "noise_index": int(np.argmax(nz))} for its, nz in zip(heldout["items"], heldout["noise"])]
    on_eval = None
    if valid_units_path and ft_cfg["curve_units"] and ft_cfg["eval_every"]:
        examples_v, parts = valid_units(valid_units_path, titles, ft_cfg["curve_units"], seed, prompt_style)
        packed = tokenize_candidates(examples_v, tok, None)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        log.info("learning curve: %d valid units with injected noise (%s)", len(packed), valid_units_path)

        def on_eval(step, peft_model):
            return units_within_auc(peft_model, packed, parts["branch_of"], parts["noise"], parts["users"], pad,
                                    intervals_cfg, seed)
    result = train(model, tok, examples, out_dir, lora=ft_cfg["lora"], steps=ft_cfg["steps"],
                   batch_size=ft_cfg["batch_size"], lr=ft_cfg["lr"], cutoff=ft_cfg["cutoff"], seed=seed,
                   checkpoint_every=ft_cfg["checkpoint_every"], threads=threads, objective=ft_cfg["objective"],
                   heldout=held[: ft_cfg["curve_examples"]], eval_every=ft_cfg["eval_every"],
                   micro_batch_size=ft_cfg["micro_batch_size"], warmup=ft_cfg["warmup"],
                   schedule=ft_cfg["schedule"], loss_span=ft_cfg["loss_span"], intervals_cfg=intervals_cfg,
                   autocast=ft_cfg["autocast"], on_eval=on_eval,
                   curve_tag=f"valid units of {valid_units_path}: {ft_cfg['curve_units']}" if on_eval else None)
    log.info("LoRA: %d steps, loss %.4f -> %.4f", result["steps"], result["first_loss"] or float("nan"),
             result["last_loss"] or float("nan"))
    return result
