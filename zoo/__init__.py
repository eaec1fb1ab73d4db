"""hinton-zoo: the systems of Geoffrey Hinton's recent papers as trained Lightning modules.

    import zoo
    zoo.list("forward-forward-*")            # catalogue names, offline, instant
    model = zoo.load("forward-forward-digits")  # LightningModule in eval mode, sha256-checked weights

`import zoo` stays light (no torch, no lightning) so `zoo list` is instant; the rest loads on first use.
"""
from __future__ import annotations

import builtins
import os
from typing import TYPE_CHECKING, Any

from zoo._errors import CheckpointNotAvailable, ChecksumError, UnknownCheckpointError

__version__ = "0.1.0"
__all__ = [
    "list", "info", "models", "create", "load", "save_pretrained", "publish",
    "UnknownCheckpointError", "ChecksumError", "CheckpointNotAvailable", "__version__",
]

if TYPE_CHECKING:
    import torch

    from zoo._catalog import Entry


def list(pattern: str = "*", *, task: str | None = None, dataset: str | None = None,
         tag: str | None = None) -> builtins.list[str]:
    """Catalogue names matching a glob `pattern` and the filters; offline, sorted."""
    from zoo import _catalog

    return _catalog.names(pattern, task=task, dataset=dataset, tag=tag)


def info(name: str) -> Entry:
    """The typed catalogue entry: metrics, paper, recipe, hub reference, licence."""
    from zoo import _catalog

    return _catalog.get(name)


def create(model: str, **init_args: Any) -> torch.nn.Module:
    """An untrained module of a registered architecture (`zoo.models()` lists the keys)."""
    from zoo._registry import model_class

    return model_class(model)(**init_args)


def load(name_or_path: str | os.PathLike, *, revision: str | None = None, num_classes: int | None = None,
         map_location: Any = "cpu", local_files_only: bool | None = None) -> torch.nn.Module:
    """A trained LightningModule in eval mode.

    `name_or_path` is a catalogue name, a local release folder or `hf-hub:ORG/REPO@<40-hex commit>`.
    Catalogue names load the published, sha256-pinned file; unpublished ones load the local release that
    `zoo reproduce NAME` wrote. `num_classes=K` builds a fresh head for fine-tuning; the rest is pretrained.
    """
    from zoo import _hub

    return _hub.load(name_or_path, revision=revision, num_classes=num_classes, map_location=map_location,
                     local_files_only=local_files_only)


def save_pretrained(module: torch.nn.Module, folder: str | os.PathLike, *, metrics: dict[str, float] | None = None,
                    name: str | None = None):
    """Write a release folder (safetensors weights, config.json, model card, metrics.json, config.yaml)."""
    from zoo import _hub

    return _hub.write_release(module, folder, metrics=metrics, name=name)


def publish(name_or_folder: str | os.PathLike, repo_id: str, *, token: str | None = None,
            endpoint: str | None = None) -> dict[str, Any]:
    """Upload a release in one Hub commit; returns and records the commit id and the files' sha256."""
    from zoo import _hub

    return _hub.publish(name_or_folder, repo_id, token=token, endpoint=endpoint)


def __getattr__(name: str):
    # `zoo.models` is the package of papers and, being callable, also `zoo.models()`: the registered keys.
    if name == "models":
        import importlib

        return importlib.import_module("zoo.models")
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
