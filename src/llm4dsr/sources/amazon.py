"""Amazon reviews, one category at a time (``datasets.<name>.category``): the 2014
release (McAuley et al.; metadata lines are Python dict literals) and the 2018 release
(Ni et al.; JSON lines), their 5-core review files and metadata, downloaded."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable

from llm4dsr.io import Llm4dsrError

from .tables import Frames, interaction_log, records, titles_frame, web_title

REQUIRED = ("category",)
AMAZON2014_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
AMAZON2018_URL = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"


def file_kinds(source: str, category: str) -> dict[str, str]:
    """{file name: reviews | meta} of a category's raw files (also what the rehearsal's
    synthetic files are named)."""
    if source == "amazon2014":
        return {f"reviews_{category}_5.json.gz": "reviews", f"meta_{category}.json.gz": "meta"}
    return {f"{category}_5.json.gz": "reviews", f"meta_{category}.json.gz": "meta"}


def files(source: str, entry: dict) -> dict[str, str]:
    """Downloads: file name -> URL."""
    cat = entry["category"]
    if source == "amazon2014":
        return {f: f"{AMAZON2014_URL}/{f}" for f in file_kinds(source, cat)}
    folders = {"reviews": "categoryFilesSmall", "meta": "metaFiles2"}
    return {f: f"{AMAZON2018_URL}/{folders[kind]}/{f}" for f, kind in file_kinds(source, cat).items()}


def read(source: str, entry: dict, raw: Path) -> Frames:
    reviews, meta = (raw / f for f in file_kinds(source, entry["category"]))
    return read_reviews(reviews, meta, ast.literal_eval if source == "amazon2014" else json.loads)


def read_reviews(reviews: Path, meta: Path, parse_meta: Callable[[str], Any]) -> Frames:
    keys = ["reviewerID", "asin", "unixReviewTime", "overall"]
    r = records(reviews, json.loads, keys)
    if r.empty:
        raise Llm4dsrError(f"{reviews}: no rows")
    missing = [k for k in keys[:3] if r[k].isna().any()]
    if missing:
        raise Llm4dsrError(f"{reviews}: record(s) without {', '.join(missing)}")
    m = records(meta, parse_meta, ["asin", "title"])
    m = m[m.asin.notna()]  # 2018 meta repeats some asins: check_raw keeps the first title
    if m.empty:
        raise Llm4dsrError(f"{meta}: no rows")
    return (interaction_log(r.reviewerID, r.asin, r.unixReviewTime.astype(str), r.overall, reviews),
            titles_frame(m.asin, m.title.tolist(), meta, web_title))
