"""The LoRA training loop, with checkpoints that resume exactly.

Checkpoints (adapter, optimizer, scheduler, step) are written every
``checkpoint_every`` steps; a rerun after an interruption resumes from the last one.
The batch of step ``s`` is a pure function of (seed, s), so a resumed run sees exactly
the data an uninterrupted one would have seen. A checkpoint resumes only the run it
came from: it carries a fingerprint of the base model, the examples and the recipe.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import Llm4dsrError, atomic_dir, write_text
from .objectives import (REMEDY, candidates_loss, heldout_metrics, packed_lengths, response_loss, tokenize,
                         tokenize_candidates, _batch)

log = logging.getLogger(__name__)


def batch_indices(n_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the batch for ``step``: epochs are seeded permutations, so resuming is exact."""
    per_epoch = max(1, n_examples // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return perm[k * batch_size:(k + 1) * batch_size]


SCHEDULES = ("constant", "linear")
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}  # x86 CPUs whose bfloat16 matmuls are not emulated


def resolve_autocast(mode: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """finetune.autocast as run here: ``auto`` is bf16 on a GPU that supports it or a CPU with
    native bfloat16 instructions (elsewhere bf16 is emulated, and slower than fp32), else none."""
    if mode != "auto":
        return mode
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    try:
        flags = {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
                 for f in line.split(":", 1)[1].split()}
    except OSError:
        flags = set()
    return "bf16" if flags & NATIVE_BF16_FLAGS else "none"


def lr_factor(schedule: str, warmup: int, steps: int):
    """The learning-rate multiplier of optimizer step ``s`` (0-based), as a function.

    constant (the study): min(1, (s + 1) / warmup). linear (the reference code, the
    Hugging Face Trainer's default): s / warmup during the warmup (so the first step has
    lr 0), then a linear decay that reaches 0 at step ``steps``.
    """
    if schedule == "constant":
        return lambda s: min(1.0, (s + 1) / max(1, warmup))
    if schedule == "linear":
        return lambda s: s / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
    raise ValueError(f"finetune.schedule: {schedule!r} is not one of {SCHEDULES}")


def add_lora(model, lora: dict):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                     target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM", bias="none")
    try:
        return get_peft_model(model, cfg)
    except ValueError as exc:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if hasattr(m, "weight")})
        raise Llm4dsrError(f"finetune.lora.target_modules={list(lora['target_modules'])}: not in the model "
                           f"({str(exc).splitlines()[0][:80]}); linear modules are e.g. {', '.join(names[:12])}") from None


def _last_position(packed: list[dict]) -> int:
    """Positions a packed example needs: its prompt and its longest branch (positions
    restart after the prompt for every branch)."""
    return max((len(r["prompt"]) + max(map(len, [*r["branches"], r["response"] or []])) for r in packed), default=0)


def check_positions(model, tokens: int, what: str) -> None:
    """Fail in one line when ``tokens`` exceed the positions the model was trained for."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and tokens > limit:
        raise Llm4dsrError(f"finetune: {what} has {tokens} tokens, more than the {limit} positions of llm.base_model: "
                           f"set finetune.cutoff (objective generate cuts the answer there), {REMEDY}")


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = sorted((p for p in ckpt_dir.glob("step-*") if (p / "state.pt").exists()),
                  key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


def train(model, tokenizer, examples: list[dict], out_dir: str | Path, *, lora: dict, steps: int, batch_size: int,
          lr: float, cutoff: int | None = None, seed: int = 0, checkpoint_every: int = 20, threads: int | None = None,
          warmup: int = 5, progress: bool = True, objective: str = "generate",
          heldout: list[dict] | None = None, eval_every: int = 0, micro_batch_size: int | None = None,
          on_eval=None, curve_tag: str | None = None, intervals_cfg: dict | None = None, schedule: str = "constant",
          loss_span: str = "answer", autocast: str = "none") -> dict:
    """LoRA-train ``model`` on ``examples``; write ``out_dir/adapter`` and ``out_dir/loss.tsv``.

    With ``heldout`` examples and ``eval_every`` > 0, the full-title detection quality on
    them is measured before training, every ``eval_every`` steps and at the end, and
    written to ``out_dir/learning_curve.tsv`` (the curve that chooses the recipe).
    ``on_eval(step, peft_model)`` may add columns of its own to each curve row (``curve_tag``
    names what it measures: a checkpoint resumes only a run that measures the same curve).
    Resumes from ``out_dir/checkpoints`` when a previous run was interrupted. ``autocast``
    ``bf16`` runs the forward pass in bfloat16 (torch.autocast; weights, gradients and
    optimizer state stay fp32); ``auto``: :func:`resolve_autocast`.
    """
    import torch
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    autocast = resolve_autocast(autocast)
    log.info("training forward pass: %s", "bfloat16 autocast" if autocast == "bf16" else "as loaded")
    peft_model = add_lora(model, lora).to(device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(schedule, warmup, steps))
    if objective == "candidates":
        tokenized = tokenize_candidates(examples, tokenizer, cutoff)
        lengths = packed_lengths(tokenized)
        check_positions(model, _last_position(tokenized), "the longest training example")
    else:
        tokenized = tokenize(examples, tokenizer, cutoff, loss_span)
        lengths = [len(ids) for ids, _ in tokenized]
        check_positions(model, max(lengths, default=0), "the longest training example")
    log.info("%d examples of %d to %d tokens (mean %.0f; finetune.cutoff %s)", len(lengths), min(lengths, default=0),
             max(lengths, default=0), float(np.mean(lengths)) if lengths else 0.0, cutoff)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    held = tokenize_candidates(heldout, tokenizer, None) if heldout and eval_every else None
    if held:
        check_positions(model, _last_position(held), "the longest held-out example")
    start, history, curve = 0, [], []
    evaluating = bool(held or on_eval) and eval_every > 0
    fingerprint = recipe_fingerprint(model, examples, lora=lora, batch_size=batch_size, lr=lr, seed=seed,
                                     objective=objective, warmup=warmup, cutoff=cutoff, schedule=schedule,
                                     loss_span=loss_span, horizon=steps if schedule == "linear" else None,
                                     **({"autocast": autocast} if autocast != "none" else {}),
                                     # the curve's points are measured while training: a checkpoint
                                     # without the ones asked for now cannot supply them
                                     **({"curve": [eval_every, len(held or []), curve_tag]} if evaluating else {}))
    last = _latest_checkpoint(ckpt_dir)
    if last is not None:
        state = torch.load(last / "state.pt", weights_only=False)
        if state.get("fingerprint") != fingerprint:  # another model, recipe or data: not this run's
            log.warning("%s is from another recipe, model or data: training from step 0", last)
            shutil.rmtree(last, ignore_errors=True)
            last = None
    if last is not None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(peft_model, state["lora"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start, history, curve = state["step"], state["history"], state.get("curve", [])
        log.info("resuming from %s (step %d of %d)", last, start, steps)

    def measure(step: int) -> None:
        # the curve's forward passes in the training's precision: bf16 halves their cost
        # and leaves the figures within their intervals (README "Time budget")
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast == "bf16"):
            m = heldout_metrics(peft_model, held, pad, intervals_cfg=intervals_cfg, seed=seed) if held else {}
            if on_eval is not None:
                m.update(on_eval(step, peft_model))
        curve.append({"step": step, "examples_seen": step * batch_size, **m})
        if held:
            log.info("held-out at step %d: top-1 %.3f, ROC-AUC %.3f", step, m["top1"], m["roc_auc"])

    peft_model.train()
    if evaluating and start == 0:
        measure(0)
    t0 = time.time()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="LoRA", disable=not progress)
    for step in bar:
        idx = batch_indices(len(tokenized), batch_size, step, seed)
        opt.zero_grad()
        loss_value, n_tokens = 0.0, 0
        # micro-batches accumulate gradients: a batch of 128 on one GPU, as the paper trains
        for chunk in np.array_split(idx, max(1, -(-len(idx) // (micro_batch_size or len(idx))))):
            # bf16 autocast: the forward pass in bfloat16, backward and weights as they are
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast == "bf16"):
                if objective == "candidates":
                    loss = candidates_loss(peft_model, tokenized, chunk, pad)
                    n_tokens += sum(len(tokenized[i]["prompt"]) + sum(map(len, tokenized[i]["branches"]))
                                    for i in chunk)
                else:
                    input_ids, attn, labels = (t.to(device) for t in _batch(tokenized, chunk, pad))
                    loss = response_loss(peft_model, input_ids, attn, labels)
                    n_tokens += int(attn.sum())
            (loss * len(chunk) / len(idx)).backward()
            loss_value += loss.item() * len(chunk) / len(idx)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append({"step": step + 1, "loss": loss_value, "tokens": n_tokens,
                        "seconds": round(time.time() - t0, 3)})
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if not math.isfinite(loss_value):
            raise Llm4dsrError(f"finetune: loss became {loss_value} at step {step + 1} (lower finetune.lr)")
        if evaluating and ((step + 1) % eval_every == 0 or step + 1 == steps):
            measure(step + 1)
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save_checkpoint(peft_model, opt, sched, step + 1, history, curve, ckpt_dir, fingerprint)
            log.info("step %d/%d loss %.4f (%.1f s)", step + 1, steps, loss_value, time.time() - t0)

    with atomic_dir(out_dir / "adapter") as tmp:
        peft_model.save_pretrained(str(tmp))
    lines = ["step\tloss\ttokens\tseconds"] + [f"{h['step']}\t{h['loss']:.6f}\t{h['tokens']}\t{h['seconds']}"
                                              for h in history]
    write_text("\n".join(lines) + "\n", out_dir / "loss.tsv")
    columns = ["step", "examples_seen", "top1", "roc_auc", "roc_auc_ci_low", "roc_auc_ci_high", "examples"]
    # every row's columns: a run resumed from a checkpoint written before a column existed has it
    # on its later rows only (empty on the earlier ones), rather than dropped
    columns += [c for c in dict.fromkeys(c for row in curve for c in row) if c not in columns]
    write_text(pd.DataFrame(curve, columns=columns).to_csv(sep="\t", index=False), out_dir / "learning_curve.tsv")
    return {"steps": steps, "first_loss": history[0]["loss"] if history else None,
            "last_loss": history[-1]["loss"] if history else None, "curve": curve, "model": peft_model}


def recipe_fingerprint(model, examples: list[dict], **recipe) -> str:
    """A hash of what a checkpoint's weights depend on, but the number of steps: the base
    model, the examples and the recipe. A checkpoint resumes only a run with the same one."""
    import hashlib

    base = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
    text = json.dumps({"base": str(base), "architecture": model.config.model_type,
                       "hidden": model.config.hidden_size, "recipe": recipe,
                       "examples": [(e["prompt"], e.get("response")) for e in examples]},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _save_checkpoint(peft_model, opt, sched, step, history, curve, ckpt_dir: Path, fingerprint: str) -> None:
    import torch
    from peft import get_peft_model_state_dict

    state = {"lora": get_peft_model_state_dict(peft_model), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "step": step,
             "history": history, "curve": curve, "fingerprint": fingerprint}
    with atomic_dir(ckpt_dir / f"step-{step:06d}") as tmp:
        torch.save(state, tmp / "state.pt")
    for old in ckpt_dir.glob("step-*"):  # keep the newest only: the adapter is small, disk is not free
        if old.name != f"step-{step:06d}":
            shutil.rmtree(old, ignore_errors=True)
