"""The user's own data: two CSV files named in the config, an interaction log
(user,item,timestamp[,rating]) and the item titles (item,title)."""
from __future__ import annotations

from pathlib import Path

from .tables import Frames, interaction_log, plain_title, read_table, titles_frame

REQUIRED = ("interactions", "items")


def files(source: str, entry: dict) -> dict[str, str]:
    return {}  # nothing to download


def inputs(entry: dict) -> list[str]:
    """The files the data rule reads: the config's two CSVs."""
    return [entry[k] for k in REQUIRED if entry[k]]


def read(source: str, entry: dict, raw: Path) -> Frames:
    return read_csvs(Path(entry["interactions"]), Path(entry["items"]))


def read_csvs(interactions: Path, items: Path) -> Frames:
    """Interactions (user,item,timestamp[,rating]) and items (item,title)."""
    r = read_table(interactions, ["user", "item", "timestamp"])
    m = read_table(items, ["item", "title"])
    return (interaction_log(r.user, r.item, r.timestamp, r["rating"] if "rating" in r else None, interactions),
            titles_frame(m["item"], m.title, items, plain_title))
