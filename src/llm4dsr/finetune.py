"""Self-supervised LoRA fine-tuning (the paper's first contribution).

No human labels are needed: in each training window exactly one position is replaced by
a random catalogue item, and the model learns to name the replaced title and the
original one. The loss covers the response tokens only.

Checkpoints (adapter, optimizer, step) are written every ``checkpoint_every`` steps; a
rerun after an interruption resumes from the last one. The batch of step ``s`` is a
pure function of (seed, s), so a resumed run sees exactly the data an uninterrupted
one would have seen.
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

from . import prompts
from .io import Llm4dsrError, atomic_dir, write_text
from .noise import draw_replacement

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- fine-tuning data

def make_examples(windows: pd.DataFrame, titles: dict[int, str], n: int, seed: int,
                  replace_with: str = "uniform", counts: np.ndarray | None = None) -> list[dict]:
    """``n`` self-supervised examples from train windows (history + target, clean items).

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
    for history, target in zip(rows["history_clean"], rows["target_clean"]):
        seq = [int(i) for i in history] + [int(target)]
        pos = int(rng.integers(len(seq)))
        original = seq[pos]
        noise = draw_replacement(set(seq), n_items, counts if replace_with == "popularity" else None, rng)
        seq[pos] = noise
        cand = [titles[i] for i in seq]
        examples.append({"prompt": prompts.prompt(cand), "response": prompts.response(titles[noise], titles[original]),
                         "noise_index": pos, "items": seq, "original": original, "candidates": cand})
    return examples


def write_examples(examples: list[dict], path: str | Path) -> None:
    write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), path)


# ---------------------------------------------------------------- training

def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt, with the BOS token when the model wants one (Gemma does,
    SmolLM2 does not), as llama.cpp's ``tokenize(add_bos=True)`` gives them."""
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def response_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a training answer, closed by the end-of-sequence token."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def tokenize(examples: list[dict], tokenizer, cutoff: int) -> list[tuple[list[int], int]]:
    """(token ids, index of the first response token) per example, cut to ``cutoff`` tokens."""
    out = []
    for ex in examples:
        p = prompt_ids(tokenizer, ex["prompt"])
        ids = (p + response_ids(tokenizer, ex["response"]))[:cutoff]
        if len(p) >= cutoff:
            raise Llm4dsrError(f"finetune.cutoff={cutoff}: a prompt has {len(p)} tokens, no room for the answer")
        out.append((ids, len(p)))
    return out


def _batch(tokenized, idx, pad_id):
    import torch

    rows = [tokenized[i] for i in idx]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for b, (ids, start) in enumerate(rows):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        attn[b, :len(ids)] = 1
        labels[b, start:len(ids)] = torch.tensor(ids[start:])
    return input_ids, attn, labels


def response_loss(peft_model, input_ids, attn, labels):
    """Mean cross-entropy over response tokens, with the output layer applied only at the
    positions that predict them (the full vocabulary projection dominates otherwise)."""
    import torch.nn.functional as F

    base = peft_model.get_base_model()
    hidden = base.model(input_ids=input_ids, attention_mask=attn).last_hidden_state
    tgt = labels[:, 1:]
    mask = tgt != -100
    logits = base.lm_head(hidden[:, :-1][mask])
    return F.cross_entropy(logits.float(), tgt[mask])


def tokenize_candidates(examples: list[dict], tokenizer, cutoff: int) -> list[dict]:
    """Per example: prompt ids, one token branch per distinct history title (display form +
    closing quote, exactly what the full-title scorer reads), the index of the noise
    branch, and (when the example has one) the response, for the suggestion's LM loss."""
    out = []
    for ex in examples:
        p = prompt_ids(tokenizer, ex["prompt"])
        titles = list(dict.fromkeys(ex["candidates"]))
        branches = [tokenizer(prompts.display_title(t) + prompts.END, add_special_tokens=False)["input_ids"]
                    for t in titles]
        response = response_ids(tokenizer, ex["response"]) if ex.get("response") else None
        if len(p) + sum(map(len, branches)) + len(response or ()) > cutoff:
            raise Llm4dsrError(f"finetune.cutoff={cutoff}: an example packs more tokens than the cutoff")
        out.append({"prompt": p, "branches": branches, "response": response,
                    "noise": titles.index(ex["candidates"][ex["noise_index"]])})
    return out


def _packed_batch(packed: list[dict], idx, pad_id):
    """Pack the prompt, every candidate branch and the response of each example into one
    sequence. A 4D mask lets each branch see the prompt and itself only, and positions
    restart after the prompt, so each branch is scored as if it alone followed the prompt,
    in one forward pass. Branch k < len(branches) is a candidate; the response comes last."""
    import torch

    rows = [packed[i] for i in idx]
    all_branches = [r["branches"] + ([r["response"]] if r["response"] else []) for r in rows]
    width = max(len(r["prompt"]) + sum(map(len, br)) for r, br in zip(rows, all_branches))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    block = torch.full((len(rows), width), -2, dtype=torch.long)  # -1 prompt, k branch k, -2 padding
    # per scored token: (example, position whose output predicts it, token, branch)
    gb, gsrc, gtok, gbr = [], [], [], []
    for b, (r, branches) in enumerate(zip(rows, all_branches)):
        n = len(r["prompt"])
        input_ids[b, :n] = torch.tensor(r["prompt"])
        position_ids[b, :n] = torch.arange(n)
        block[b, :n] = -1
        start = n
        for k, br in enumerate(branches):
            m = len(br)
            input_ids[b, start:start + m] = torch.tensor(br)
            position_ids[b, start:start + m] = torch.arange(n, n + m)
            block[b, start:start + m] = k
            gb += [b] * m
            gsrc += [n - 1] + list(range(start, start + m - 1))
            gtok += br
            gbr += [k] * m
            start += m
    i = torch.arange(width)
    causal = i[None, :] <= i[:, None]
    same = (block[:, None, :] == -1) | (block[:, None, :] == block[:, :, None])
    mask = (causal[None] & same) | torch.eye(width, dtype=torch.bool)[None]  # padding sees itself: no NaN
    return input_ids, position_ids, mask[:, None], tuple(torch.tensor(x) for x in (gb, gsrc, gtok, gbr))


def branch_logliks(peft_model, packed: list[dict], idx, pad_id):
    """(summed log-likelihood per branch [B, max branches], per-token log-probs, token example
    ids, token branch ids) for the examples ``idx``."""
    import torch

    device = next(peft_model.parameters()).device
    input_ids, position_ids, mask, (gb, gsrc, gtok, gbr) = (
        x.to(device) if hasattr(x, "to") else tuple(t.to(device) for t in x)
        for x in _packed_batch(packed, idx, pad_id))
    base = peft_model.get_base_model()
    hidden = base.model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask).last_hidden_state
    logp = torch.log_softmax(base.lm_head(hidden[gb, gsrc]).float(), -1)
    tok_lp = logp.gather(1, gtok[:, None])[:, 0]
    n_br = int(gbr.max()) + 1
    sums = torch.zeros(len(idx) * n_br, device=device).index_add(0, gb * n_br + gbr, tok_lp).view(len(idx), n_br)
    return sums, tok_lp, gb, gbr


def candidates_loss(peft_model, packed: list[dict], idx, pad_id):
    """Cross-entropy over the likelihoods of the history's own titles (the quantity the
    full-title scorer reads) + the LM loss of the response (so suggestions are learnt too)."""
    import torch
    import torch.nn.functional as F

    sums, tok_lp, gb, gbr = branch_logliks(peft_model, packed, idx, pad_id)
    losses = []
    for b, i in enumerate(idx):
        k = len(packed[i]["branches"])
        loss = F.cross_entropy(sums[b, :k][None], torch.tensor([packed[i]["noise"]], device=sums.device))
        if packed[i]["response"]:
            loss = loss - tok_lp[(gb == b) & (gbr == k)].mean()
        losses.append(loss)
    return torch.stack(losses).mean()


def candidate_logliks(peft_model, packed: list[dict], pad_id, batch_size: int = 8) -> list[np.ndarray]:
    """Per example, the summed log-likelihood of each candidate branch (no gradients)."""
    import torch

    was_training = peft_model.training
    peft_model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(packed), batch_size):
            idx = list(range(s, min(s + batch_size, len(packed))))
            sums = branch_logliks(peft_model, packed, idx, pad_id)[0].cpu().numpy()
            out += [sums[b, :len(packed[i]["branches"])] for b, i in enumerate(idx)]
    peft_model.train(was_training)
    return out


def heldout_metrics(peft_model, packed: list[dict], pad_id, batch_size: int = 8) -> dict:
    """Top-1 and ROC-AUC of the full-title scores on held-out self-supervised examples,
    by the study's detection metric code."""
    from .detectors import softmax
    from .metrics import detection_metrics

    probs = softmax(candidate_logliks(peft_model, packed, pad_id, batch_size))
    items = pd.DataFrame({"unit": np.repeat(np.arange(len(packed)), [len(p) for p in probs]),
                          "noise": [int(j == ex["noise"]) for ex, p in zip(packed, probs) for j in range(len(p))],
                          "prob": np.concatenate(probs)})
    m = detection_metrics(items, None)
    return {"top1": m["top1"], "roc_auc": m["roc_auc"], "examples": len(packed)}


def batch_indices(n_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the batch for ``step``: epochs are seeded permutations, so resuming is exact."""
    per_epoch = max(1, n_examples // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return perm[k * batch_size:(k + 1) * batch_size]


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


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    done = sorted((p for p in ckpt_dir.glob("step-*") if (p / "state.pt").exists()),
                  key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


def train(model, tokenizer, examples: list[dict], out_dir: str | Path, *, lora: dict, steps: int, batch_size: int,
          lr: float, cutoff: int = 512, seed: int = 0, checkpoint_every: int = 20, threads: int | None = None,
          warmup: int = 5, progress: bool = True, objective: str = "generate",
          heldout: list[dict] | None = None, eval_every: int = 0, micro_batch_size: int | None = None,
          on_eval=None) -> dict:
    """LoRA-train ``model`` on ``examples``; write ``out_dir/adapter`` and ``out_dir/loss.tsv``.

    With ``heldout`` examples and ``eval_every`` > 0, the full-title detection quality on
    them is measured before training, every ``eval_every`` steps and at the end, and
    written to ``out_dir/learning_curve.tsv`` (the curve that chooses the recipe).
    ``on_eval(step, peft_model)`` may add columns of its own to each curve row.
    Resumes from ``out_dir/checkpoints`` when a previous run was interrupted.
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
    peft_model = add_lora(model, lora).to(device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    if objective == "candidates":
        tokenized = tokenize_candidates(examples, tokenizer, cutoff)
    else:
        tokenized = tokenize(examples, tokenizer, cutoff)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    held = tokenize_candidates(heldout, tokenizer, 10 ** 6) if heldout and eval_every else None
    start, history, curve = 0, [], []
    fingerprint = recipe_fingerprint(model, examples, lora=lora, batch_size=batch_size, lr=lr, seed=seed,
                                     objective=objective, warmup=warmup, cutoff=cutoff)
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
        m = heldout_metrics(peft_model, held, pad) if held else {}
        if on_eval is not None:
            m.update(on_eval(step, peft_model))
        curve.append({"step": step, "examples_seen": step * batch_size, **m})
        if held:
            log.info("held-out at step %d: top-1 %.3f, ROC-AUC %.3f", step, m["top1"], m["roc_auc"])

    peft_model.train()
    evaluating = bool(held or on_eval) and eval_every > 0
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
            if objective == "candidates":
                loss = candidates_loss(peft_model, tokenized, chunk, pad)
                n_tokens += sum(len(tokenized[i]["prompt"]) + sum(map(len, tokenized[i]["branches"])) for i in chunk)
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
    columns = ["step", "examples_seen", "top1", "roc_auc", "examples"]
    columns += [c for c in (curve[0] if curve else {}) if c not in columns]
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


# ---------------------------------------------------------------- the workflow step

def heldout_mask(windows: pd.DataFrame, heldout_units: pd.DataFrame) -> np.ndarray:
    """True for the windows the held-out self-supervised units were made from.

    Those windows never become fine-tuning examples. Their neighbours (the same user's
    overlapping windows) may, just as every train block the model later scores was
    fine-tuning material: the held-out set measures the task on unseen examples, not on
    unseen users. Leaving out all overlapping windows would remove most of a small log.
    """
    held = {(int(u), int(p[-1]) + 1) for u, p in zip(heldout_units["user"], heldout_units["positions"]) if len(p)}
    return np.array([(int(u), int(t)) in held for u, t in zip(windows["user"], windows["target_pos"])], dtype=bool)


def run(windows_path, items_path, heldout_units_path, llm_cfg: dict, ft_cfg: dict, seed: int,
        out_dir, threads: int | None = None) -> dict:
    """Build the fine-tuning examples and LoRA-train the configured base model."""
    from .io import read_parquet
    from .llm import load_torch, resolve

    out_dir = Path(out_dir)
    windows = read_parquet(windows_path, ["split", "user", "target_pos", "history_clean", "target_clean"])
    items = read_parquet(items_path, ["item", "title", "count"])
    heldout = read_parquet(heldout_units_path, ["user", "positions", "items", "noise"])
    titles = dict(zip(items["item"].astype(int), items["title"]))
    counts = np.zeros(int(items["item"].max()) + 1)
    counts[items["item"].to_numpy()] = items["count"].to_numpy()
    pool = windows[~heldout_mask(windows, heldout)]
    log.info("%d train windows, %d left after removing the %d held-out ones",
             int((windows["split"] == "train").sum()), int((pool["split"] == "train").sum()), len(heldout))
    examples = make_examples(pool, titles, ft_cfg["samples"], seed, ft_cfg.get("replace_with", "uniform"), counts)
    write_examples(examples, out_dir / "sft_train.jsonl")

    base = resolve(llm_cfg["base_model"], llm_cfg.get("gguf_file"))
    model, tok = load_torch(base, llm_cfg.get("dtype", "float32"))
    held = [{"prompt": prompts.prompt([titles[int(i)] for i in its]), "candidates": [titles[int(i)] for i in its],
             "noise_index": int(np.argmax(nz))} for its, nz in zip(heldout["items"], heldout["noise"])]
    result = train(model, tok, examples, out_dir, lora=ft_cfg["lora"], steps=ft_cfg["steps"],
                   batch_size=ft_cfg["batch_size"], lr=ft_cfg["lr"], cutoff=ft_cfg.get("cutoff", 512), seed=seed,
                   checkpoint_every=ft_cfg.get("checkpoint_every", 20), threads=threads,
                   objective=ft_cfg.get("objective", "generate"), heldout=held[: ft_cfg.get("curve_examples", 100)],
                   eval_every=ft_cfg.get("eval_every", 25), micro_batch_size=ft_cfg.get("micro_batch_size"))
    log.info("LoRA: %d steps, loss %.4f -> %.4f", result["steps"], result["first_loss"] or float("nan"),
             result["last_loss"] or float("nan"))
    return result
