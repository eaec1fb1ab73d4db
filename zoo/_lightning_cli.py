"""The LightningCLI behind `zoo fit|validate|test|predict` and `zoo reproduce`."""
from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

import zoo.models  # noqa: F401  (registers every paper, so `--model=ForwardForward` resolves)
from zoo._module import ZooModule


class ZooCLI(LightningCLI):
    """LightningCLI over every zoo model and DataModule: `--model=ForwardForward`, `--data=IDXDataModule`,
    `--config` files stacked in order, `--print_config`, `--model.help ForwardForward`."""

    def __init__(self, args=None, run: bool = True, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"prog": "zoo"})
        super().__init__(ZooModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        import zoo.data  # noqa: F401  (so `--data=IDXDataModule` resolves)

    def after_instantiate_classes(self) -> None:
        # Checkpoints go to <default_root_dir>/checkpoints, not into the logger's new version folder, so a
        # rerun of the same command with `--ckpt_path last` finds the checkpoint the killed run left.
        for cb in self.trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.join(self.trainer.default_root_dir, "checkpoints")
