"""A calibrated scorer that combines detectors.

Self-supervised units (one item of a clean history replaced) come with free labels.
A logistic regression on per-item features drawn from any set of detector score
tables is fitted on them and gives each item of a unit its own probability of being
noise: calibrated, not normalised over the unit, so the paper's threshold rule reads
an honest number.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from llm4dsr.io import Llm4dsrError, read_parquet, write_parquet
from llm4dsr.scores import read_scores, scores_frame
from llm4dsr.units import item_table

log = logging.getLogger(__name__)


def features(units: pd.DataFrame, scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """unit, idx, noise and, per detector d: d:logp (raw score), d:logit (of the within-unit
    probability), d:rank (0 = most suspicious .. 1 = least); plus inv_len (1 / unit length).
    Only units scored by every detector are kept."""
    out = None
    for name in sorted(scores):
        t = item_table(units, scores[name], name=f"scores/{name}.parquet")
        logp = t["logp"].to_numpy()
        norm = logp - t.groupby("unit")["logp"].transform(lambda x: logsumexp(x.to_numpy())).to_numpy()
        length = t.groupby("unit")["idx"].transform("size").to_numpy()
        rank = t.groupby("unit")["logp"].rank(ascending=False, method="average").to_numpy() - 1
        f = pd.DataFrame({"unit": t["unit"], "idx": t["idx"], "noise": t["noise"], "inv_len": 1.0 / length,
                          f"{name}:logp": logp,
                          f"{name}:logit": norm - np.log(-np.expm1(np.minimum(norm, -1e-12))),
                          f"{name}:rank": rank / np.maximum(length - 1, 1)})
        out = f if out is None else out.merge(f.drop(columns=["noise", "inv_len"]), on=["unit", "idx"])
    if out is None or out.empty:
        raise Llm4dsrError("scores: no unit is scored by every detector of the combination")
    return out.sort_values(["unit", "idx"]).reset_index(drop=True)


def feature_columns(table: pd.DataFrame) -> list[str]:
    return ["inv_len"] + [c for c in table.columns if ":" in c]


def fit(table: pd.DataFrame, seed: int = 0) -> Pipeline:
    """Fit the combiner on a features() table of labelled (self-supervised) units."""
    if table["noise"].nunique() < 2:
        raise Llm4dsrError("selfsup units: the calibration set needs both noise and clean items")
    cols = feature_columns(table)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    model.fit(table[cols], table["noise"].to_numpy())  # a frame: the model keeps its column names
    coefs = {c: round(float(w), 3) for c, w in zip(cols, model[-1].coef_[0])}
    log.info("combined scorer fitted on %d items of %d units: %s", len(table), table["unit"].nunique(), coefs)
    return model


def predict(model: Pipeline, units: pd.DataFrame, scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """scores/combined.parquet: per item a calibrated probability; logp = its log."""
    table = features(units, scores)
    missing = sorted(set(model.feature_names_in_) - set(table.columns))
    if missing:
        raise Llm4dsrError(f"scores: the combined scorer was fitted with {missing[0]}, which is not given")
    table["p"] = model.predict_proba(table[list(model.feature_names_in_)])[:, 1]
    kept = units[units["unit"].isin(table["unit"])]
    probs = [g.to_numpy() for _, g in table.groupby("unit", sort=True)["p"]]
    return scores_frame(kept.sort_values("unit"), [np.log(x) for x in probs], probs)


def run(names: list[str], units_path, selfsup_units_path, score_paths: list, selfsup_score_paths: list, seed: int,
        out_path) -> pd.DataFrame:
    """The workflow step of rule combine: fit on the self-supervised units' scores by the
    detectors ``names``, then score the noise setting's units."""
    selfsup = read_parquet(selfsup_units_path)
    model = fit(features(selfsup, read_scores(selfsup_score_paths, names)), seed)
    units = read_parquet(units_path)
    out = predict(model, units, read_scores(score_paths, names))
    log.info("combined scores for %d of %d units", len(out), len(units))
    write_parquet(out, out_path)
    return out
