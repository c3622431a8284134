"""File I/O shared by every stage: clear one-line errors and atomic writes.

Every output is written to a temporary name in the same folder and renamed at the
end, so an interrupted or failed step never leaves a half-written file behind. The
renamed file or folder gets the permissions any new file gets (0666 / 0777 less the
process umask), not the owner-only 0600 / 0700 of a temporary name, so a results folder
shared by a group stays readable.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd


class Llm4dsrError(Exception):
    """An error caused by the user's input (config, data file, model file).

    The message is one line and names the file or config key at fault.
    """


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path: str | os.PathLike) -> Llm4dsrError:
    """The one line for a write that filled the disk: an environment problem, not a bug."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2 ** 20:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    return Llm4dsrError(f"{path}: cannot write: the disk is full ({free} in {folder}): free some space and rerun "
                        f"the same command to resume")


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


def _publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` normal permissions and rename it onto ``path``."""
    mode = (0o777 if tmp.is_dir() else 0o666) & ~_umask()
    try:
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise Llm4dsrError(f"{path}: cannot write ({exc.strerror})") from None


def _temporary(path: Path, make) -> Path:
    """A temporary file or folder next to ``path`` (``make`` = tempfile.mkstemp or mkdtemp)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        made = make(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise Llm4dsrError(f"{path}: cannot write ({exc.strerror})") from None
    if isinstance(made, tuple):  # mkstemp: (fd, name)
        os.close(made[0])
        made = made[1]
    return Path(made)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file (or folder) is removed and ``path`` is untouched.
    A folder that cannot be written gives a one-line error naming ``path``.
    """
    path = Path(path)
    tmp = _temporary(path, lambda **kw: tempfile.mkstemp(suffix=suffix or ".tmp", **kw))
    try:
        yield tmp
        _publish(tmp, path)
    except BaseException as exc:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if disk_full(exc):  # measured after the partial file is gone
            raise disk_full_error(path) from None
        raise


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a DataFrame to Parquet atomically (no index, deterministic bytes)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd")


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise Llm4dsrError(f"{path}: file not found")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise Llm4dsrError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise Llm4dsrError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


@dataclass(frozen=True)
class Catalogue:
    """items.parquet as the stages use it: titles and interaction counts by item id."""

    titles: dict[int, str]
    counts: np.ndarray  # indexed by item id; counts[0] = 0 (no item 0)

    @property
    def n_items(self) -> int:
        return len(self.titles)


def read_catalogue(path: str | os.PathLike) -> Catalogue:
    """Read items.parquet (docs/outputs.md); item ids must be exactly 1..n."""
    items = read_parquet(path, ["item", "title", "count"])
    ids = items["item"].to_numpy()
    if len(ids) == 0 or not np.array_equal(np.sort(ids), np.arange(1, len(ids) + 1)):
        raise Llm4dsrError(f"{path}: item ids must be 1..{len(ids)}, each once (rewrite it with rule data)")
    counts = np.zeros(len(ids) + 1, dtype=np.float64)
    counts[ids] = items["count"].to_numpy()
    return Catalogue(dict(zip(ids.astype(int).tolist(), items["title"])), counts)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON atomically with sorted keys, so equal content gives equal bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise Llm4dsrError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise Llm4dsrError(f"{path}: malformed JSON ({exc})") from None


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: filled under a temporary name, then renamed."""
    path = Path(path)
    tmp = _temporary(path, tempfile.mkdtemp)
    try:
        yield tmp
        if path.exists():
            try:
                shutil.rmtree(path)
            except OSError as exc:
                raise Llm4dsrError(f"{path}: cannot replace ({exc.strerror})") from None
        _publish(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc):
            raise disk_full_error(path) from None
        raise
