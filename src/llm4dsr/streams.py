"""Random streams: one per (config seed, tag), so that every random step of the study
(samples, noise, bootstrap) is reproducible and independent of the others, and never
depends on Python's salted ``hash()``."""
from __future__ import annotations

import hashlib

import numpy as np


def rng_for(seed: int, tag: str) -> np.random.Generator:
    """A random stream for (seed, tag), stable across processes and Python versions."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little")])
