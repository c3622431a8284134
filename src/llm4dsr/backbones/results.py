"""The results table of a noise setting: backbone test metrics over seeds, by condition."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..io import Llm4dsrError, atomic_path, read_json, write_text

def aggregate(json_paths: Iterable[str | Path], csv_path: str | Path, md_path: str | Path,
              baseline: str = "noisy") -> pd.DataFrame:
    """Mean and sample std over seeds of each (model, condition), with the relative gain
    (in %) of the mean over the ``baseline`` condition of the same model.

    Rows keep the order in which (model, condition) first appear in ``json_paths``.
    """
    records = []
    for p in json_paths:
        r = read_json(p)
        missing = [k for k in ("model", "condition", "seed", "test") if k not in r]
        if missing:
            raise Llm4dsrError(f"{p}: missing key(s) {', '.join(missing)}")
        records.append({"model": r["model"], "condition": r["condition"], "seed": r["seed"],
                        **r["test"], "best_epoch": r.get("best_epoch"), "train_seconds": r.get("train_seconds")})
    if not records:
        raise Llm4dsrError(f"{csv_path}: no backbone results to aggregate")
    df = pd.DataFrame(records)
    if df.duplicated(["model", "condition", "seed"]).any():
        raise Llm4dsrError(f"{csv_path}: duplicate (model, condition, seed) among the inputs")
    metrics = sorted((c for c in df.columns if "@" in c), key=lambda c: (c.split("@")[0], int(c.split("@")[1])))
    g = df.groupby(["model", "condition"], sort=False)
    table = g.size().rename("seeds").to_frame()
    for m in metrics:
        table[f"{m}_mean"] = g[m].mean()
        table[f"{m}_std"] = g[m].std(ddof=1)
    models = table.index.get_level_values("model")
    for m in metrics:
        base = {mod: v for (mod, cond), v in table[f"{m}_mean"].items() if cond == baseline}
        table[f"{m}_gain_pct"] = 100 * (table[f"{m}_mean"] / models.map(lambda x: base.get(x, math.nan)) - 1)
    table["best_epoch_mean"] = g["best_epoch"].mean()
    table["train_seconds_mean"] = g["train_seconds"].mean()
    table = table.reset_index()
    with atomic_path(csv_path) as tmp:
        table.round(6).to_csv(tmp, index=False)
    write_text(_markdown(table, metrics, baseline), md_path)
    return table


def _markdown(table: pd.DataFrame, metrics: list[str], baseline: str) -> str:
    head = ["model", "condition", "seeds", *(m.upper() for m in metrics)]
    lines = [f"Test metrics, mean ± std over seeds; in brackets the change of the mean relative to `{baseline}`.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [r["model"], r["condition"], str(r["seeds"])]
        for m in metrics:
            cell = f"{r[f'{m}_mean']:.4f}"
            if not math.isnan(r[f"{m}_std"]):
                cell += f" ± {r[f'{m}_std']:.4f}"
            if r["condition"] != baseline and math.isfinite(r[f"{m}_gain_pct"]):
                cell += f" ({r[f'{m}_gain_pct']:+.1f}%)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
