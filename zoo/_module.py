"""`ZooModule`: the base of every zoo LightningModule (what `--model=` lists in the CLI)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F


class ZooModule(L.LightningModule):
    """A LightningModule with typed plain-data init args, a registry key and head patterns.

    Subclasses call `self.save_hyperparameters(ignore=["weights"])` and, at the end of `__init__`,
    `self.init_weights_from(weights)`: fine-tuning starts from a zoo checkpoint on the CPU, before a
    strategy wraps or shards the module. `--ckpt_path` stays Lightning's resume.
    """

    zoo_key: ClassVar[str] = ""
    #: state-dict key patterns of the classifier head, dropped when `num_classes` changes
    head_keys: ClassVar[tuple[str, ...]] = ()

    def init_weights_from(self, weights: str | None) -> None:
        if weights:
            from zoo._hub import load_weights_into

            load_weights_into(self, weights)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resume (`--ckpt_path`) from another model or shape stops here with one clear line; subclasses that
        override this hook call super()."""
        from zoo._lightning_cli import check_resume

        check_resume(self, checkpoint)

    def zoo_init_args(self) -> dict[str, Any]:
        """The plain-data arguments that rebuild this module (what config.json stores)."""
        return {k: v for k, v in self.hparams.items() if not str(k).startswith("_")}

    def analyse(self, folder: Path, datamodule: Any = None) -> dict[str, Any]:
        """The paper's measurements beyond test metrics, run by `zoo reproduce` after testing.

        Returns any of: "metrics" {key: float} (merged into the entry's measured metrics), "tables"
        {title: markdown} (printed and put in the model card) and "figures" {file name: path of a PNG
        written under `folder`}. The default measures nothing.
        """
        return {}

    @property
    def planned_epochs(self) -> int | None:
        """`trainer.max_epochs` once attached to a Trainer (for per-epoch schedules), else None."""
        return self._trainer.max_epochs if self._trainer is not None else None


class ZooClassifier(ZooModule):
    """A classifier: `forward` returns class scores [B, C]; `evaluate(batch, stage)` updates and logs the metrics
    for "val" or "test". The default logs accuracy (from `self.metrics[stage]`, a torchmetrics Accuracy) and the
    cross-entropy of the scores; models scored otherwise override it."""

    def evaluate(self, batch: Any, stage: str) -> None:
        x, y = batch
        logits = self(x)
        self.metrics[stage](logits.argmax(1), y)
        self.log(f"{stage}/acc", self.metrics[stage], prog_bar=True)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def predict_step(self, batch, batch_idx) -> torch.Tensor:
        return self(batch[0]).argmax(1)
