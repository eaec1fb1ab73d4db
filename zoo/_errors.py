"""Errors users can catch. No heavy imports: `zoo list` and `zoo info` raise these too."""
from __future__ import annotations


class UnknownCheckpointError(KeyError):
    """A catalogue name that does not exist; the message lists the closest names."""

    def __init__(self, name: str, suggestions: list[str]):
        self.name = name
        self.suggestions = suggestions
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown checkpoint {name!r}.{hint} See `zoo list` for all names.")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class ChecksumError(ValueError):
    """A weight file whose sha256 is not the pinned one; nothing was loaded from it."""


class CheckpointNotAvailable(FileNotFoundError):
    """No published weights, no local release, or no network while the file is not cached."""


class WeightsMismatchError(RuntimeError):
    """A state dict that does not fit the model: lists missing, unexpected and mis-shaped keys."""


class CatalogError(ValueError):
    """checkpoints.yaml does not follow the schema; the message names the entry and the field."""


class CheckpointMismatchError(WeightsMismatchError):
    """A Lightning checkpoint (`--ckpt_path`) written by another model or another shape than the one being run."""


class ConversionError(ValueError):
    """Official weights that do not convert: leftover or missing variables, wrong shapes, another architecture."""
