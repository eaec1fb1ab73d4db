"""Lightning glue for the sparsely-gated MoE language model (arXiv 1701.06538): truncated backprop through time
over contiguous windows with the LSTM states carried from one window to the next, the cross-entropy of the next
word plus the MoE layer's balancing loss, Adam with the paper's warm-up and inverse-square-root decay, perplexity
through torchmetrics, and the test set's load balance (coefficient of variation of the experts' loads)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.text import Perplexity

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.text import check_model_vocabulary, release_vocabulary
from zoo.models.moe_lm.model import MoELM, State
from zoo.nn.moe import cv_squared


def _detach(state: State | None) -> State | None:
    return None if state is None else tuple(tuple(t.detach() for t in s) for s in state)


def cv(v: torch.Tensor) -> torch.Tensor:
    """Coefficient of variation, population standard deviation over the mean (0 for one expert): the square root
    of the balancing losses' CV² (zoo.nn.moe.cv_squared)."""
    return cv_squared(v.double()).sqrt()


@register_model("moe_lm")
class MoELanguageModel(ZooModule):
    """Word-level LM: embedding, LSTM, sparsely-gated MoE, LSTM, softmax (model.MoELM).

    Args:
        vocab_size: must equal the vocabulary the data module builds (checked before training).
        d, num_experts, k, expert_hidden, dropout, w_importance, w_load, noisy, moe_sigmoid: see model.MoELM.
            num_experts=1 with expert_hidden = k·h is the compute-matched dense baseline (the paper's MoE-1-Wide).
        lr, warmup_steps: Adam's peak learning rate, reached linearly over `warmup_steps`, then decayed in
            proportion to 1/sqrt(step): Appendix C.1's schedule ("increased linearly for the first 1000 training
            steps, and decreased after that so as to be proportional to the inverse square root of the step
            number"; its base learning rate is not given).
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    head_keys = ("net.softmax.*",)

    def __init__(self, vocab_size: int, d: int = 512, num_experts: int = 32, k: int = 4, expert_hidden: int = 1024,
                 dropout: float = 0.25, w_importance: float = 0.1, w_load: float = 0.1, noisy: bool = True,
                 moe_sigmoid: bool = True, lr: float = 1e-3, warmup_steps: int = 1000, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = MoELM(vocab_size, d, num_experts, k, expert_hidden, dropout, w_importance, w_load, noisy,
                         moe_sigmoid)
        self.ppl = torch.nn.ModuleDict({s: Perplexity() for s in ("val", "test")})
        self._state: dict[str, State | None] = {}
        self._totals: dict[str, torch.Tensor] = {}  # the test set's summed load and importance per expert
        self.init_weights_from(weights)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """Next-word logits [B, T, V] for tokens [B, T] (`self.net(tokens, state)` also gives the MoE statistics
        and the LSTM states to carry on with)."""
        return self.net(tokens, state).logits

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        check_model_vocabulary(self.hparams.vocab_size, dm, stage)

    # ---- one window, its state carried over from the previous window of the same stage
    def _step(self, batch, stage: str):
        x, y = batch
        out = self.net(x, self._state.get(stage))
        self._state[stage] = _detach(out.state)
        return out, F.cross_entropy(out.logits.flatten(0, 1), y.flatten())

    def on_train_epoch_start(self) -> None:
        self._state["train"] = None

    def training_step(self, batch, batch_idx):
        out, ce = self._step(batch, "train")
        self.log("train/loss", ce, prog_bar=True)
        self.log("train/aux_loss", out.aux_loss)
        return ce + out.aux_loss

    def _eval_start(self, stage: str) -> None:
        self._state[stage] = None

    def on_validation_epoch_start(self) -> None:
        self._eval_start("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start("test")
        self._totals = {}

    def _eval(self, batch, stage: str) -> None:
        out, ce = self._step(batch, stage)
        self.ppl[stage].update(out.logits, batch[1])
        self.log(f"{stage}/ppl", self.ppl[stage], prog_bar=stage == "val")
        self.log(f"{stage}/loss", ce, sync_dist=True)
        if stage == "test":
            for key, v in (("load", out.load), ("importance", out.importance)):
                self._totals[key] = self._totals.get(key, 0) + v.detach()

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def on_test_epoch_end(self) -> None:
        """CV of the experts' load and importance summed over the whole test set (and all processes)."""
        for key, v in self._totals.items():
            total = self.all_gather(v)
            total = total.sum(0) if total.dim() > v.dim() else total
            self.log(f"test/{key}_cv", cv(total).float(), rank_zero_only=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr)
        warm = max(1, hp.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, math.sqrt(warm / (s + 1))))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def release_figures(self, folder: Path, datamodule=None) -> dict[str, Path]:
        """The vocabulary the model was trained with, saved beside the weights (vocabulary.json): a release is
        scored on other text with `TextDataModule(..., vocab="<release>/vocabulary.json")`."""
        return release_vocabulary(folder, datamodule)
