"""Published denoisers for sequential recommendation, behind one interface (base.Denoiser).

* ``hsd``: HSD (Zhang et al., CIKM 2022): user- and sequence-level inconsistency signals
  drop noisy items from the histories;
* ``steam``: STEAM (Lin et al., WWW 2023): an item-wise corrector (keep / delete / insert)
  trained jointly with a masked-item recommender by self-supervised corruption.

Each fits on one noise setting's windows, scores the items of units.parquet as a detector
does, corrects every window's history (never a target) and evaluates its own recommender.
"""
from __future__ import annotations

from typing import Any

from ..io import Llm4dsrError
from .base import CHANGES, Denoiser, apply_edits
from .hsd import HSD
from .steam import STEAM

DENOISERS: dict[str, type[Denoiser]] = {"hsd": HSD, "steam": STEAM}


def make_denoiser(name: str) -> Denoiser:
    if name not in DENOISERS:
        raise Llm4dsrError(f"config.yaml: unknown denoiser {name!r} (known: {', '.join(DENOISERS)})")
    return DENOISERS[name]()


def defaults(name: str) -> dict[str, Any]:
    """The paper's hyperparameters of denoiser ``name``."""
    return dict(DENOISERS[name].DEFAULTS)


__all__ = ["CHANGES", "DENOISERS", "Denoiser", "HSD", "STEAM", "apply_edits", "defaults", "make_denoiser"]
