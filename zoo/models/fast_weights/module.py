"""Lightning glue for the associative-retrieval experiment of "Using Fast Weights to Attend to the Recent Past":
the fast-weights RNN or one of its controls (IRNN, LSTM) trained by cross-entropy on the queried value with Adam."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.models.fast_weights.data import decode
from zoo.models.fast_weights.model import FastWeightsRNN, RetrievalNet


@register_model("fast_weights")
class FastWeightsRetrieval(ZooClassifier):
    """A single-layer recurrent net on the associative-retrieval task (arXiv 1610.06258, §4.1, Table 1).

    `cell` picks the recurrent layer: the paper's fast-weights RNN (A(t) = λA(t−1) + ηh(t)h(t)ᵀ, S inner steps
    with layer normalisation over units; model.py) or a control of Table 1, the IRNN or the LSTM. The associative
    LSTM (Danihelka et al. 2016) is not built. Table 1 of the paper compares the test error of these cells at
    R = 20, 50 and 100; its numbers are not quoted here until checked against the paper text. The catalogue's
    fast-weights-ar-* entries hold ours.

    Args:
        cell: "fast_weights", "irnn" or "lstm".
        hidden_size: R, the recurrent units (20, 50 or 100 in Table 1).
        num_symbols, embed_dim, readout_hidden: 37 symbols in and out, a learned 100-d embedding, 100 ReLUs
            between the final hidden state and the softmax.
        decay, fast_lr, inner_steps, w_scale: λ = 0.95, η = 0.5, S = 1, W initialised to 0.05 I (fast weights only).
        lr: Adam's learning rate (1e-3, Adam's default: the notes do not give the paper's).
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    def __init__(self, cell: str = "fast_weights", hidden_size: int = 20, num_symbols: int = 37, embed_dim: int = 100,
                 readout_hidden: int = 100, decay: float = 0.95, fast_lr: float = 0.5, inner_steps: int = 1,
                 w_scale: float = 0.05, lr: float = 1e-3, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = RetrievalNet(cell, num_symbols, embed_dim, hidden_size, readout_hidden, decay, fast_lr, inner_steps,
                                w_scale)
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=num_symbols)
                                      for s in ("val", "test")})
        self.init_weights_from(weights)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)

    def training_step(self, batch, batch_idx):
        tokens, y = batch
        loss = F.cross_entropy(self(tokens), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def release_figures(self, folder: Path, datamodule=None, rows: int = 8) -> dict[str, Path]:
        """What the fast weights recall at the query: for the first `rows` test sequences, the scores
        η λ^{t−τ} h(τ)ᵀh_0 with which the query step's inner loop takes back each earlier hidden state (each row scaled
        by its largest), each cell labelled with its symbol, the prediction and answer on the right. Fast-weights
        cell only."""
        if not isinstance(self.net.rnn, FastWeightsRNN) or datamodule is None:
            return {}
        datamodule.setup("test")
        tokens, y = datamodule.test_set[:rows]
        self.eval()
        with torch.no_grad():
            emb = self.net.embed(tokens.to(self.device))
            s = self.net.rnn.recall(emb).cpu()
            pred = self(tokens.to(self.device)).argmax(1).cpu()
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        n, t = s.shape
        fig, ax = plt.subplots(figsize=(0.55 * t + 2.2, 0.42 * n + 1.0))
        im = ax.imshow((s / s.amax(1, keepdim=True).clamp(min=1e-12)).numpy(), cmap="viridis", aspect="auto",
                       vmin=0, vmax=1)
        for i in range(n):
            seq = decode(tokens[i])
            for j in range(t):
                ax.text(j, i, seq[j], ha="center", va="center", fontsize=8, color="white")
            ax.text(t - 0.3, i, f"{seq[-1]} -> {decode(pred[i:i + 1])} ({decode(y[i:i + 1])})", va="center",
                    fontsize=8)
        ax.set_xticks(range(t))
        ax.set_xticklabels([f"τ={j + 1}" for j in range(t)], fontsize=7)
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.22, label=r"$\eta\lambda^{t-\tau} h(\tau)^\top h_0$ / row's largest")
        path = _save(fig, folder / "fast_weights_recall.png",
                     f"What the fast weights bring back at the query (first {n} test sequences): query -> "
                     "prediction (answer)")
        return {path.name: path}
