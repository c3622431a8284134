"""Data sources: where a dataset's raw log and titles come from, one module per family of
releases, found by name (llm4dsr.registry; the source names and their modules are
llm4dsr.names.SOURCES). Each module defines

    REQUIRED                       the datasets.<name> keys its sources cannot do without
    files(source, entry)           downloads into resources/<name>/: file name -> URL ({} offline)
    read(source, entry, raw_dir)   the raw frames (sources.tables.Frames) from those files
    MD5 (optional)                 published md5 of a download, checked after fetching
    inputs(entry) (optional)       other files the data rule reads (a local source's CSVs)

``entry`` is the dataset's validated ``datasets.<name>`` entry. The data stage
(llm4dsr.data) checks and preprocesses what ``read`` returns.
"""
from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from types import ModuleType

from llm4dsr import registry
from llm4dsr.io import Llm4dsrError, atomic_path

from .tables import Frames


def module(source: str) -> ModuleType:
    return registry.get("source", source)


def required(source: str) -> tuple[str, ...]:
    """The datasets.<name> keys a source cannot do without."""
    return tuple(module(source).REQUIRED)


def check_required(entry: dict, name: str) -> None:
    for key in required(entry["source"]):
        if not entry[key]:
            raise Llm4dsrError(f"config datasets.{name}.{key}: required for source {entry['source']}")


def raw_files(entry: dict, name: str = "dataset") -> dict[str, str]:
    """File names to fetch into ``resources/<name>/``, with their URLs ({} if offline)."""
    check_required(entry, name)
    return module(entry["source"]).files(entry["source"], entry)


def known_md5(entry: dict, file_name: str) -> str | None:
    """The published md5 of a download, if its source publishes one."""
    return getattr(module(entry["source"]), "MD5", {}).get(file_name)


def raw_inputs(entry: dict, name: str) -> list[str]:
    """Input files of the data rule: downloads in resources/<name>/, and any file of the config."""
    mod = module(entry["source"])
    files = [f"resources/{name}/{f}" for f in raw_files(entry, name)]
    return files + (mod.inputs(entry) if hasattr(mod, "inputs") else [])


def load_raw(entry: dict, raw_dir: str | Path | None = None, name: str = "dataset") -> Frames:
    """Read the raw log and titles of a dataset entry (``raw_dir``: its downloads folder)."""
    check_required(entry, name)
    return module(entry["source"]).read(entry["source"], entry, Path(raw_dir or f"resources/{name}"))


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
