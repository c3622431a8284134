"""Small raw files in the real formats of the Amazon review releases, for rehearsals.

A dataset entry with ``synthetic: {n_users, n_items}`` (config/rehearsal.yaml) gets its raw
files from rule ``synthetic_raw`` instead of rule ``download``: nothing is fetched, and
the data stage then runs the very reader (``amazon2014`` or ``amazon2018``) that real
files go through. The files imitate the releases' formats and quirks:

* reviews: gzipped JSON lines, one review each (``reviewerID``, ``asin``,
  ``reviewerName``, ``helpful``, ``reviewText``, ``overall``, ``summary``,
  ``unixReviewTime``, ``reviewTime``), 5-core like the releases' ``*_5`` files;
* metadata: gzipped lines, Python dict literals in the 2014 release (single quotes,
  read with ``ast.literal_eval``) and JSON in the 2018 one; an item without a title, a
  title with an HTML entity, and a 2018-style repeated record are included.

Users draw most of their items from one or two themes, so that a history has a
"majority interest" for the LLM to read, and their reviews are spread over time with
shared timestamps (ties), as real days are.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from llm4dsr.io import Llm4dsrError, atomic_path
from llm4dsr.sources import amazon

THEMES = {
    "LEGO": ["City Fire Station", "Star Wars X-Wing", "Creator Treehouse", "Technic Crane", "Friends Cafe",
             "Ninjago Temple", "Duplo Farm", "Classic Brick Box"],
    "Puzzle": ["1000 Piece Alpine Lake", "500 Piece World Map", "3D Eiffel Tower", "Wooden Brain Teaser",
               "Jigsaw Night Sky", "Floor Puzzle Zoo", "Rubik's Cube 3x3", "Tangram Set"],
    "Plush": ["Teddy Bear 12 inch", "Unicorn Pillow", "Sloth Cuddle Toy", "Penguin Family", "Giant Panda",
              "Bunny Rattle", "Dinosaur Buddy", "Kitten Puppet"],
    "Board Game": ["Settlers Expansion", "Family Trivia Night", "Chess & Checkers Set", "Cooperative Dungeon",
                   "Word Tiles Deluxe", "Racing Dice Game", "Strategy Empires", "Party Charades"],
    "RC": ["Off-Road Truck 1:16", "Stunt Car 360", "Mini Drone Quadcopter", "Speed Boat", "Monster Truck",
           "Helicopter Gyro", "Rock Crawler", "Race Car Drift"],
}


def _catalogue(n_items: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(asin, theme, title) per item; themes in turn, titles unique."""
    themes = list(THEMES)
    out = []
    for i in range(n_items):
        theme = themes[i % len(themes)]
        names = THEMES[theme]
        name = names[(i // len(themes)) % len(names)]
        edition = i // (len(themes) * len(names))
        title = f"{theme} {name}" + (f" Edition {edition + 1}" if edition else "")
        out.append((f"B{rng.integers(10**8, 10**9):09d}X", theme, title))
    return out


def amazon_records(n_users: int, n_items: int, seed: int, min_len: int = 6,
                   max_len: int = 16) -> tuple[list[dict], list[dict]]:
    """(reviews, metadata) as records: each user reviews ``min_len..max_len`` distinct
    items, mostly of one or two themes; every item is reviewed at least 5 times."""
    if n_items < 10 or n_users < 5:
        raise Llm4dsrError("synthetic: needs at least 5 users and 10 items")
    rng = np.random.default_rng(seed)
    items = _catalogue(n_items, rng)
    by_theme: dict[str, list[int]] = {}
    for k, (_, theme, _) in enumerate(items):
        by_theme.setdefault(theme, []).append(k)
    themes = list(by_theme)
    counts = np.zeros(n_items, dtype=int)
    reviews = []
    day = 86400
    start = 1_300_000_000  # 2011-03-13
    for u in range(n_users):
        liked = rng.choice(len(themes), size=2, replace=False)
        length = int(rng.integers(min_len, max_len + 1))
        pool = by_theme[themes[liked[0]]] + by_theme[themes[liked[1]]]
        weights = np.array([3.0 if k in by_theme[themes[liked[0]]] else 1.0 for k in pool])
        # the least reviewed items first among equals, so that every item reaches 5 reviews
        weights = weights / (1 + counts[pool])
        chosen = list(rng.choice(pool, size=min(length, len(pool)), replace=False, p=weights / weights.sum()))
        if rng.random() < 0.3:  # an off-theme item: the data's own noise
            other = [k for k in range(n_items) if k not in chosen]
            chosen[int(rng.integers(len(chosen)))] = int(rng.choice(other))
        t = start + int(rng.integers(0, 400)) * day
        user_id = f"A{rng.integers(10**11, 10**12):012d}"
        for k in chosen:
            counts[k] += 1
            t += int(rng.choice([0, day, 3 * day, 10 * day]))  # 0: two reviews on one day (a tie)
            asin, theme, title = items[k]
            stars = float(rng.choice([3, 4, 5, 5]))
            reviews.append({"reviewerID": user_id, "asin": asin, "reviewerName": f"user {u}",
                            "helpful": [int(rng.integers(0, 3)), int(rng.integers(3, 6))],
                            "reviewText": f"My {theme.lower()} review of {title}.", "overall": stars,
                            "summary": "Great" if stars == 5 else "Fine", "unixReviewTime": t,
                            "reviewTime": _review_time(t)})
    for k in np.flatnonzero(counts < 5):  # top up to 5 reviews by users of that theme (5-core)
        asin, theme, title = items[k]
        theme_of = {a: th for a, th, _ in items}
        fans = [r["reviewerID"] for r in reviews if theme_of[r["asin"]] == theme]
        reviewed = {r["reviewerID"] for r in reviews if r["asin"] == asin}
        for user_id in [f for f in dict.fromkeys(fans) if f not in reviewed][: 5 - counts[k]]:
            last = max(r["unixReviewTime"] for r in reviews if r["reviewerID"] == user_id)
            reviews.append({"reviewerID": user_id, "asin": asin, "reviewerName": "late reviewer", "helpful": [0, 0],
                            "reviewText": f"Also liked {title}.", "overall": 4.0, "summary": "Nice",
                            "unixReviewTime": last + day, "reviewTime": _review_time(last + day)})
            counts[k] += 1
    meta = []
    for k, (asin, theme, title) in enumerate(items):
        rec = {"asin": asin, "price": round(float(rng.uniform(5, 80)), 2),
               "imUrl": f"http://example.invalid/{asin}.jpg", "salesRank": {"Toys & Games": int(rng.integers(1, 10**5))},
               "categories": [["Toys & Games", theme]]}
        if k == 1:
            title = title.replace("&", "&amp;") + " &amp; Friends"  # scraped titles keep HTML entities
        if k != 0:  # the first item has no title: the reader must drop its reviews
            rec["title"] = title
        meta.append(rec)
    meta.append(dict(meta[-1]))  # a repeated record, as the 2018 metadata has
    return reviews, meta


def _review_time(t: int) -> str:
    import datetime as dt

    d = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return f"{d.month:02d} {d.day}, {d.year}"


def raw_file_names(source: str, category: str) -> dict[str, str]:
    """{file name: kind} of a source's raw files (kind: reviews or meta), as its downloads
    are named (llm4dsr.sources.amazon)."""
    if source not in ("amazon2014", "amazon2018"):
        raise Llm4dsrError(f"synthetic: source {source} has no synthetic files (amazon2014 or amazon2018 only)")
    return amazon.file_kinds(source, category)


def write_raw(dataset_cfg: dict, file_name: str, out: str | Path, seed: int) -> Path:
    """Write one raw file of a synthetic dataset (``dataset_cfg``: its ``datasets:`` entry)."""
    source, category, size = dataset_cfg["source"], dataset_cfg["category"], dataset_cfg["synthetic"]
    kinds = raw_file_names(source, category)
    if file_name not in kinds:
        raise Llm4dsrError(f"synthetic: {file_name} is not a raw file of {source} {category} ({', '.join(kinds)})")
    reviews, meta = amazon_records(size["n_users"], size["n_items"], seed)
    if kinds[file_name] == "reviews":
        lines = [json.dumps(r) for r in reviews]
    elif source == "amazon2014":
        lines = [repr(m) for m in meta]  # Python dict literals, single quotes
    else:
        lines = [json.dumps(m) for m in meta]
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))  # no name, mtime 0: the same bytes on every run
    return out
