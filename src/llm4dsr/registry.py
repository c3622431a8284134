"""One way to find a member of every extension family: its name is its module.

As RecBole's ``get_model`` does, ``get(family, name)`` imports ``<package>.<name>`` and
returns the entry point every member of that family defines (a data source: its
module, which may serve several source names, llm4dsr.names.SOURCES). The names themselves stay
listed once, in llm4dsr.names (the schema's enums and Snakemake's wildcards read them
without importing torch); a member's own hyperparameters are its schema section
(``backbone.<name>``, ``denoise.<name>``). Adding a member: its module, its name, its
schema section if it has settings, its test.
"""
from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from llm4dsr import names
from llm4dsr.io import Llm4dsrError


class Family(NamedTuple):
    package: str           # where the member modules live
    modules: dict          # registered name (llm4dsr.names) -> its module in ``package``
    entry: str             # what each member module defines ("": the module is the member)
    config_key: str        # where a user names a member (for the error message)

    @property
    def names(self) -> tuple:
        return tuple(self.modules)


def _same(names_: tuple) -> dict:
    return {n: n for n in names_}  # the name is the module


FAMILIES = {
    "backbone": Family("llm4dsr.backbones", _same(names.BACKBONES), "build", "backbone.models"),
    "denoiser": Family("llm4dsr.denoisers", _same(tuple(names.DENOISERS)), "build", "denoise.methods"),
    "noise_model": Family("llm4dsr.noise_models", _same(names.NOISE_MODELS), "draw", "noise.settings"),
    "source": Family("llm4dsr.sources", dict(names.SOURCES), "", "datasets.<name>.source"),  # the module itself
}


def get(family: str, name: str) -> Any:
    """The entry point of member ``name`` of ``family`` (a one-line error for an unknown name)."""
    fam = FAMILIES[family]
    if name not in fam.names:
        raise Llm4dsrError(f"config {fam.config_key}: unknown {family.replace('_', ' ')} {name!r} "
                           f"(known: {', '.join(fam.names)})")
    module = importlib.import_module(f"{fam.package}.{fam.modules[name]}")
    return getattr(module, fam.entry) if fam.entry else module
