"""Lightning glue for Fast Weight Layers (arXiv 2212.02475): a causal transformer LM trained over windows of real
text with the FWL block as its output layer (or, fast=False, the same network with slow weights only), AdamW with
a linear warm-up and cosine decay, perplexity through torchmetrics, and the paper's comparison measured after
testing (`analyse`): over the test text read as one stream, the perplexity and time of the model as trained, of the
same weights without the fast pass, and of dynamic evaluation (SGD on each window's loss after scoring it, the
weights carried to the next window; its learning rate chosen on the validation text)."""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.text import Perplexity

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.text import check_model_vocabulary, release_vocabulary
from zoo.models.fwl.model import FWLTransformer


def stream_windows(stream: torch.Tensor, length: int, limit: int | None = None):
    """(x, y) windows [1, ≤length] over one token stream, in order (the first `limit` predicted tokens)."""
    end = len(stream) - 1 if limit is None else min(len(stream) - 1, limit)
    for i in range(0, end, length):
        n = min(length, end - i)
        yield stream[i:i + n].unsqueeze(0), stream[i + 1:i + 1 + n].unsqueeze(0)


@torch.no_grad()
def score_stream(net: torch.nn.Module, windows) -> tuple[torch.Tensor, float]:
    """[2, length]: the summed NLL and the number of windows at each position in the window, and the seconds the
    pass took."""
    sums, counts, started = None, None, time.perf_counter()
    for x, y in windows:
        nll = F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="none")
        sums, counts = _fold(sums, counts, nll)
    return torch.stack([sums, counts]), time.perf_counter() - started


def dynamic_evaluation(net: torch.nn.Module, windows, lr: float) -> tuple[torch.Tensor, float]:
    """Dynamic evaluation (Mikolov 2010; Krause et al. 2018's SGD form): score each window with the current
    weights, then take one SGD step of size `lr` on that window's mean loss, and carry the adapted weights on.
    Returns what `score_stream` returns; the network's weights are restored afterwards."""
    saved = copy.deepcopy(net.state_dict())
    params = [p for p in net.parameters() if p.requires_grad]
    sums, counts, started = None, None, time.perf_counter()
    try:
        for x, y in windows:
            nll = F.cross_entropy(net(x).flatten(0, 1), y.flatten(), reduction="none")
            grads = torch.autograd.grad(nll.mean(), params, allow_unused=True)  # η is unused without fast weights
            used = [(p, g) for p, g in zip(params, grads) if g is not None]
            with torch.no_grad():
                torch._foreach_add_([p for p, _ in used], [g for _, g in used], alpha=-lr)
            sums, counts = _fold(sums, counts, nll.detach())
        seconds = time.perf_counter() - started
    finally:
        net.load_state_dict(saved)
    return torch.stack([sums, counts]), seconds


def _fold(sums, counts, nll: torch.Tensor):
    n = nll.shape[0]
    if sums is None:
        sums, counts = nll.new_zeros(n), nll.new_zeros(n)
    sums[:n] += nll
    counts[:n] += 1
    return sums, counts


def ppl(per_position: torch.Tensor) -> float:
    """exp of the mean NLL; infinite where it overflows or is not a number (a diverged dynamic evaluation), so
    that choosing the best learning rate never picks it."""
    mean = float(per_position[0].sum() / per_position[1].sum())
    return math.exp(mean) if mean < 700 else math.inf


@register_model("fwl_lm")
class FWLLanguageModel(ZooModule):
    """Causal transformer LM with a Fast Weight Layer block as its output layer (model.FWLTransformer).

    Args:
        vocab_size: must equal the data's vocabulary (checked before training).
        d, layers, heads, context, dropout: the transformer (context: the longest window, the data's bptt or more).
        fast: train and evaluate with the fast-weight pass; False is the transformer baseline (the same block with
            slow weights only).
        chunk, step_size: the FWL's linear-attention chunk length and the initial learned step sizes.
        lr, weight_decay, warmup_steps: AdamW, its peak learning rate reached linearly over `warmup_steps`, then a
            cosine decay to zero at the end of training.
        dynamic_lrs: dynamic evaluation's candidate SGD learning rates, tried on the first `tune_tokens` validation
            tokens; the best is used on the test text (an empty list skips dynamic evaluation).
        analysis_tokens: how many test tokens the analysis reads as one stream (None: all of them).
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    head_keys = ("net.fwl.unembed.*",)

    def __init__(self, vocab_size: int, d: int = 256, layers: int = 4, heads: int = 4, context: int = 256,
                 dropout: float = 0.1, fast: bool = True, chunk: int = 256, step_size: float = 0.01, lr: float = 1e-3,
                 weight_decay: float = 0.1, warmup_steps: int = 200,
                 dynamic_lrs: list[float] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0), tune_tokens: int = 20000,
                 analysis_tokens: int | None = None, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.hparams.dynamic_lrs = [float(v) for v in dynamic_lrs]
        self.net = FWLTransformer(vocab_size, d, layers, heads, context, dropout, fast, chunk, step_size)
        self.ppl = torch.nn.ModuleDict({s: Perplexity() for s in ("val", "test")})
        self.init_weights_from(weights)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V] for tokens [B, T] (T at most `context`)."""
        return self.net(tokens)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        check_model_vocabulary(self.hparams.vocab_size, dm, stage)
        if getattr(dm, "bptt", 0) > self.hparams.context:
            raise ValueError(f"the data's windows (bptt={dm.bptt}) are longer than the model's context "
                             f"({self.hparams.context}): lower --data.init_args.bptt or raise "
                             "--model.init_args.context")

    def _loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self.net(x)
        return logits, F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def training_step(self, batch, batch_idx):
        _, loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval(self, batch, stage: str) -> None:
        logits, loss = self._loss(batch)
        self.ppl[stage].update(logits, batch[1])
        self.log(f"{stage}/ppl", self.ppl[stage], prog_bar=stage == "val")
        self.log(f"{stage}/loss", loss, sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        hp = self.hparams
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2 and "tok" not in n and "pos" not in n]
        rest = [p for n, p in self.named_parameters() if not (p.dim() >= 2 and "tok" not in n and "pos" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": rest, "weight_decay": 0.0}], lr=hp.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        warm = max(1, min(hp.warmup_steps, total))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- the paper's comparison, after testing
    def analyse(self, folder: Path | None, datamodule: Any = None) -> dict[str, Any]:
        """Over the test text as one stream of windows (batch 1, the data's bptt): perplexity and seconds of the
        model as trained, of its weights without the fast pass (fast models), and of dynamic evaluation; a table,
        and a figure of the loss by position in the window."""
        if datamodule is None or not hasattr(datamodule, "streams"):
            return {}
        datamodule.setup("test")
        hp, net = self.hparams, self.net
        length = min(datamodule.bptt, hp.context)
        test = datamodule.streams["test"]
        net.eval()
        runs: dict[str, tuple[torch.Tensor, float]] = {}
        runs["as trained"] = score_stream(net, stream_windows(test, length, hp.analysis_tokens))
        if net.fwl.fast:
            net.fwl.fast = False
            try:
                runs["slow weights only"] = score_stream(net, stream_windows(test, length, hp.analysis_tokens))
            finally:
                net.fwl.fast = True
        metrics = {"test/stream_ppl": ppl(runs["as trained"][0])}
        base_s = runs["as trained"][1]
        if "slow weights only" in runs:
            metrics["test/slow_ppl"] = ppl(runs["slow weights only"][0])
            metrics["test/fast_cost"] = base_s / runs["slow weights only"][1]
        tried: dict[float, float] = {}
        if hp.dynamic_lrs:
            val = datamodule.streams["validation"]
            for lr in hp.dynamic_lrs:
                tried[lr] = ppl(dynamic_evaluation(net, stream_windows(val, length, hp.tune_tokens), lr)[0])
            best = min(tried, key=tried.get)
            runs[f"dynamic evaluation (lr {best:g})"] = dyn = dynamic_evaluation(
                net, stream_windows(test, length, hp.analysis_tokens), best)
            metrics.update({"test/dyn_ppl": ppl(dyn[0]), "test/dyn_lr": best, "test/dyn_cost": dyn[1] / base_s})
        n_tokens = int(runs["as trained"][0][1].sum())
        rows = ["| evaluation | test perplexity | seconds | tokens/s | cost vs as trained |", "|---|---|---|---|---|"]
        rows += [f"| {k} | {ppl(v):.2f} | {s:.1f} | {n_tokens / s:.0f} | {s / base_s:.2f}x |"
                 for k, (v, s) in runs.items()]
        tables = {f"Test text as one stream ({n_tokens} tokens, windows of {length}, batch 1, this machine)":
                  "\n".join(rows)}
        if tried:
            tables["Dynamic evaluation's learning rate, chosen on the validation text"] = "\n".join(
                ["| SGD lr | validation perplexity |", "|---|---|"] + [f"| {k:g} | {v:.2f} |" for k, v in tried.items()])
        figures = {}
        if folder is not None:
            figures["loss_by_position.png"] = self._position_figure(runs, Path(folder) / "loss_by_position.png")
        return {"metrics": metrics, "tables": tables, "figures": figures}

    def _position_figure(self, runs: dict[str, tuple[torch.Tensor, float]], path: Path) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, (v, _) in runs.items():
            keep = v[1] > 0
            ax.plot(torch.nonzero(keep).flatten().tolist(), (v[0][keep] / v[1][keep]).tolist(), label=name, lw=1)
        ax.set_xlabel("position in the window")
        ax.set_ylabel("mean test NLL (nats)")
        ax.legend(fontsize=8)
        return _save(fig, path, "Loss by position: fast weights and dynamic evaluation help more later on")

    def release_figures(self, folder: Path, datamodule=None) -> dict[str, Path]:
        """The training vocabulary, saved beside the weights (vocabulary.json)."""
        return release_vocabulary(folder, datamodule)
