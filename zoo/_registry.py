"""Architecture registry: key -> LightningModule class (timm's `register_model`, without the builders)."""
from __future__ import annotations

import difflib
import fnmatch
import importlib

_MODELS: dict[str, type] = {}


def register_model(key: str):
    """Class decorator: make `cls` buildable as `zoo.create(key, ...)` and from catalogue entries."""

    def wrap(cls: type) -> type:
        if key in _MODELS and _MODELS[key] is not cls:
            raise ValueError(f"model key {key!r} registered twice: {_MODELS[key].__qualname__} and {cls.__qualname__}")
        cls.zoo_key = key
        _MODELS[key] = cls
        return cls

    return wrap


def _import_all() -> None:
    importlib.import_module("zoo.models")


def model_class(key: str) -> type:
    _import_all()
    if key not in _MODELS:
        close = difflib.get_close_matches(key, list(_MODELS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {key!r}.{hint} Registered: {', '.join(sorted(_MODELS))}")
    return _MODELS[key]


def model_keys(pattern: str = "*") -> list[str]:
    _import_all()
    return sorted(k for k in _MODELS if fnmatch.fnmatchcase(k, pattern))
