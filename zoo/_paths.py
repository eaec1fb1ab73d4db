"""Where the zoo keeps things: the packaged catalogue and recipes, and $ZOO_HOME."""
from __future__ import annotations

import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "_resources"


def catalog_path() -> Path:
    """`ZOO_CATALOG` if set, else the catalogue shipped with the package."""
    env = os.environ.get("ZOO_CATALOG")
    return Path(env).expanduser() if env else RESOURCES / "checkpoints.yaml"


def zoo_home() -> Path:
    return Path(os.environ.get("ZOO_HOME", "~/.cache/zoo")).expanduser()


def releases_dir() -> Path:
    return zoo_home() / "releases"


def resolve_recipe(recipe: str) -> Path:
    """A recipe path as written in the catalogue (`configs/...`): absolute, cwd-relative or packaged."""
    p = Path(recipe).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return RESOURCES / recipe
