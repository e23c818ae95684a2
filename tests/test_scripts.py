"""Helpers of the scripts in scripts/ (their full runs need trained models: see docs/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tig_batch import BaselineSearch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_search_settings_parse_into_typed_fields() -> None:
    parse = _load("compare_searches").parse_search
    assert parse("") == BaselineSearch()
    search = parse("optimizer=ascent,n_iterations=10,lr=0.25,adaptive_lr=true,min_gap=0.5")
    assert search == BaselineSearch(
        optimizer="ascent", n_iterations=10, lr=0.25, adaptive_lr=True, min_gap=0.5
    )
    assert isinstance(search.n_iterations, int)


def test_every_listed_variant_is_a_valid_search() -> None:
    module = _load("compare_searches")
    searches = [module.parse_search(text) for text in module.VARIANTS.values()]
    assert len(set(searches)) == len(searches)


def test_an_unknown_search_field_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown BaselineSearch field 'steps'"):
        _load("compare_searches").parse_search("steps=3")
