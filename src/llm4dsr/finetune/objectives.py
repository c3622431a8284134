"""Tokenized training examples and the two LoRA objectives.

* ``generate`` (the paper): next-token cross-entropy on the answer tokens (loss span
  ``answer``) or on every token of prompt and answer (``sequence``, the reference code's
  train_on_inputs).
* ``candidates``: cross-entropy over the likelihoods of the history's own titles (the
  quantity the full-title scorer reads), every title scored in one packed forward pass
  with a 4D attention mask, plus the answer's loss.

The held-out metrics of the learning curve use the candidates' likelihoods too.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import prompts
from ..io import Llm4dsrError


def prompt_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt, with the BOS token when the model wants one (Gemma does,
    SmolLM2 does not), as llama.cpp's ``tokenize(add_bos=True)`` gives them."""
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def response_ids(tokenizer, text: str) -> list[int]:
    """Token ids of a training answer, closed by the end-of-sequence token."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


REMEDY = "or cut titles shorter (datasets.<dataset>.max_title_chars) or histories (window.max_history)"


def _too_long(cutoff: int, lengths: list[int], what: str) -> Llm4dsrError:
    """The error of examples longer than ``cutoff``: the first one, the longest, the remedy."""
    first = next(i for i, n in enumerate(lengths) if n > cutoff)
    return Llm4dsrError(f"finetune.cutoff={cutoff}: the example on line {first + 1} of sft_train.jsonl {what} "
                        f"{lengths[first]} tokens "
                        f"(the longest {max(lengths)}): set finetune.cutoff to at least {max(lengths)}, or to null "
                        f"(= the longest example), {REMEDY}")


LOSS_SPANS = ("answer", "sequence")


def tokenize(examples: list[dict], tokenizer, cutoff: int | None,
             loss_span: str = "answer") -> list[tuple[list[int], int]]:
    """(token ids, index of the first token in the loss) per example, cut to ``cutoff``
    tokens (None: not cut): the first response token (loss span ``answer``) or 0
    (``sequence``: every token a model predicts, i.e. all but the first). A prompt that
    leaves no room for the answer is an error."""
    if loss_span not in LOSS_SPANS:
        raise ValueError(f"finetune.loss_span: {loss_span!r} is not one of {LOSS_SPANS}")
    out, starts = [], []
    for ex in examples:
        p = prompt_ids(tokenizer, ex["prompt"])
        out.append(((p + response_ids(tokenizer, ex["response"]))[:cutoff], len(p) if loss_span == "answer" else 0))
        starts.append(len(p))
    if cutoff is not None and any(start >= cutoff for start in starts):
        raise _too_long(cutoff, [start + 1 for start in starts], "needs (prompt + one answer token)")
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
    """Mean cross-entropy over the labelled tokens (the response, or the whole sequence),
    with the output layer applied only at the positions that predict them (the full
    vocabulary projection dominates otherwise)."""
    import torch.nn.functional as F

    base = peft_model.get_base_model()
    hidden = base.model(input_ids=input_ids, attention_mask=attn).last_hidden_state
    tgt = labels[:, 1:]
    mask = tgt != -100
    logits = base.lm_head(hidden[:, :-1][mask])
    return F.cross_entropy(logits.float(), tgt[mask])


def tokenize_candidates(examples: list[dict], tokenizer, cutoff: int | None) -> list[dict]:
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
        out.append({"prompt": p, "branches": branches, "response": response,
                    "noise": titles.index(ex["candidates"][ex["noise_index"]])})
    if cutoff is not None and any(n > cutoff for n in packed_lengths(out)):
        raise _too_long(cutoff, packed_lengths(out), "(prompt, each candidate title, answer) packs")
    return out


def packed_lengths(packed: list[dict]) -> list[int]:
    """Tokens of each tokenize_candidates() example in its packed sequence."""
    return [len(r["prompt"]) + sum(map(len, r["branches"])) + len(r["response"] or ()) for r in packed]


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


def units_within_auc(peft_model, packed: list[dict], branch_of: list[np.ndarray], noise: list[np.ndarray],
                     users: np.ndarray, pad_id, intervals_cfg: dict | None = None, seed: int = 0,
                     batch_size: int = 8) -> dict:
    """Within-history ROC-AUC of the full-title scores on units with injected noise (the
    study's own detection figure, llm4dsr.metrics.unit_roc_auc): ``packed`` their prompts
    and distinct titles (tokenize_candidates), ``branch_of[u]`` the branch of each item of
    unit u, ``noise[u]`` its 0/1 mask, ``users[u]`` its user (the interval resamples users)."""
    from .. import intervals
    from ..metrics import unit_roc_auc

    logliks = candidate_logliks(peft_model, packed, pad_id, batch_size)
    items = pd.DataFrame({"unit": np.repeat(np.arange(len(packed)), [len(b) for b in branch_of]),
                          "noise": np.concatenate(noise).astype(int),
                          "prob": np.concatenate([ll[b] for ll, b in zip(logliks, branch_of)])})
    auc = unit_roc_auc(items).reindex(range(len(packed))).to_numpy(dtype=float)
    mixed = np.isfinite(auc)
    ci = [None, None]
    if intervals_cfg and mixed.any():
        weights = intervals.user_weights(users[mixed], intervals_cfg["resamples"], seed, "learning-curve-valid")
        ci = intervals.interval(intervals.weighted_mean(auc[mixed], weights), intervals_cfg["level"]) or ci
    return {"valid_roc_auc_within": float(auc[mixed].mean()) if mixed.any() else None,
            "valid_roc_auc_within_ci_low": ci[0], "valid_roc_auc_within_ci_high": ci[1], "valid_units": int(mixed.sum())}


def heldout_metrics(peft_model, packed: list[dict], pad_id, batch_size: int = 8, intervals_cfg: dict | None = None,
                    seed: int = 0) -> dict:
    """Top-1 and ROC-AUC of the full-title scores on held-out self-supervised examples,
    by the study's detection metric code; with ``intervals_cfg`` (config `intervals`),
    the ROC-AUC's interval too (examples resampled)."""
    from .. import intervals
    from ..metrics import detection_metrics
    from ..scores import softmax

    probs = softmax(candidate_logliks(peft_model, packed, pad_id, batch_size))
    items = pd.DataFrame({"unit": np.repeat(np.arange(len(packed)), [len(p) for p in probs]),
                          "noise": [int(j == ex["noise"]) for ex, p in zip(packed, probs) for j in range(len(p))],
                          "prob": np.concatenate(probs)})
    m = detection_metrics(items, None)
    ci = [None, None]
    if intervals_cfg:
        weights = intervals.user_weights(items["unit"].to_numpy(), intervals_cfg["resamples"], seed, "learning-curve")
        ci = intervals.interval(intervals.roc_auc(items["noise"], items["prob"], weights), intervals_cfg["level"]) or ci
    return {"top1": m["top1"], "roc_auc": m["roc_auc"], "roc_auc_ci_low": ci[0], "roc_auc_ci_high": ci[1],
            "examples": len(packed)}
