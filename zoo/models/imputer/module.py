"""Lightning glue for the Imputer (arXiv 2002.08926): the same network trained as its own CTC expert (every position
masked, the CTC loss) or as an Imputer (masks drawn over the expert's Viterbi alignments, the dynamic-programming
imputation loss or the imitation loss), scored by the phone error rate of block decoding."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torchmetrics.text import WordErrorRate

from zoo._module import ZooPhoneRecognizer
from zoo._registry import register_model
from zoo.data.speech import PHONE_SETS
from zoo.models.imputer.model import Imputer, block_decode, block_mask, imitation_loss, imputation_loss
from zoo.nn.ctc import collapse, viterbi_alignment


@register_model("imputer")
class ImputerRecognizer(ZooPhoneRecognizer):
    """Phone recognition by iterative imputation of a CTC alignment (model.Imputer).

    Args:
        in_features: inputs per frame (123: 40 mels + energy with Δ, ΔΔ, seen as 3 planes by the convolutions).
        phone_set: "cmudict39" (LibriSpeech and the synthetic corpus) or "timit61" (scored as its 61 labels).
        d, layers, heads, ff, dropout, channels: the network (the self-attention stack and the convolutions).
        loss: "ctc" (the expert: every position masked, CTC's marginal likelihood), "imputation" (the paper's
            dynamic programme over alignments that agree with the unmasked positions of the expert's alignment) or
            "imitation" (cross-entropy on the expert's outputs at the masked positions).
        block: B, the block size of the masks and of decoding (B decoding passes).
        expert: a release of this model trained with loss="ctc" whose Viterbi alignments the Imputer learns from,
            loaded when fitting starts (prepare_expert); unless `weights` is given the Imputer starts from the
            expert's weights with every alignment embedding set to the mask's, so that it starts as the expert.
            Like `weights`, not saved as a hyperparameter.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up, then constant.
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    head_keys = ("net.output.*",)

    def __init__(self, in_features: int = 123, phone_set: Literal["timit61", "cmudict39"] = "cmudict39",
                 d: int = 144, layers: int = 4, heads: int = 4, ff: int = 576, dropout: float = 0.1,
                 channels: int = 32, loss: Literal["ctc", "imputation", "imitation"] = "ctc", block: int = 8,
                 lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int = 500, expert: str | None = None,
                 weights: str | None = None):
        super().__init__()
        if loss not in ("ctc", "imputation", "imitation"):
            raise ValueError(f"loss must be 'ctc', 'imputation' or 'imitation', got {loss!r}")
        if phone_set not in PHONE_SETS:
            raise ValueError(f"phone_set must be one of {sorted(PHONE_SETS)}, got {phone_set!r}")
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        self.save_hyperparameters(ignore=["weights", "expert"])
        self.net = Imputer(in_features, len(PHONE_SETS[phone_set]), d, layers, heads, ff, dropout, channels)
        self.init_speech(in_features)
        self._expert: list[Imputer] = []                     # a list: kept out of the state dict and the release
        self._expert_source, self._start_from_expert = expert, not weights
        self.init_weights_from(weights)

    def prepare_expert(self) -> None:
        """Load the expert release (once; called when fitting starts, so that building the recipe does not need it)
        and, unless `weights` was given, start from it."""
        from zoo._hub import load_state_strict, resolve

        source, self._expert_source = self._expert_source, None
        if not source:
            return
        src = resolve(source)
        if src.model != "imputer" or src.init_args.get("loss") != "ctc":
            raise ValueError(f"{source} is not an Imputer trained as a CTC expert (model {src.model!r}, loss "
                             f"{src.init_args.get('loss')!r}): train one with configs/imputer/*-ctc.yaml")
        shape = {k: src.init_args.get(k) for k in ("in_features", "phone_set", "d", "layers", "heads", "ff",
                                                   "channels")}
        ours = {k: self.hparams[k] for k in shape}
        if shape != ours:
            raise ValueError(f"the expert {source} is {shape}, this model {ours}: the Imputer starts from its expert, "
                             "so give it the expert's sizes")
        state = {k[len("net."):]: v for k, v in src.state.items() if k.startswith("net.")}
        expert = Imputer(ours["in_features"], len(PHONE_SETS[ours["phone_set"]]), ours["d"], ours["layers"],
                         ours["heads"], ours["ff"], 0.0, ours["channels"])
        load_state_strict(expert, state)
        self._expert = [expert.eval().requires_grad_(False)]
        if self._start_from_expert:
            load_state_strict(self.net, state)
            with torch.no_grad():
                self.net.embed.weight.copy_(self.net.embed.weight[self.net.mask_id].expand_as(self.net.embed.weight))
                self.feature_mean.copy_(src.state["feature_mean"])
                self.feature_std.copy_(src.state["feature_std"])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, steps: int | None = None) -> list[list[int]]:
        """Decoded phone ids (1..K) per utterance: CTC's best path for the expert, block decoding in `steps`
        passes (default B) for the Imputer."""
        if self.hparams.loss == "ctc":
            lp, n = self.net(x, lengths)
            return collapse(lp.argmax(-1), n)
        return collapse(*block_decode(self.net, x, lengths, self.hparams.block, steps))

    def loss(self, batch) -> torch.Tensor:
        x, lengths, y, y_lengths = batch
        hp = self.hparams
        if hp.loss == "ctc":
            lp, n = self.net(x, lengths)
            return imputation_loss(lp, y, n, y_lengths, torch.full(lp.shape[:2], -1, device=lp.device)).mean()
        self.prepare_expert()
        if not self._expert:
            raise ValueError(f"loss={hp.loss!r} learns from an expert's alignments: pass expert=<a release of this "
                             "model trained with loss=ctc>")
        h, n = self.net.encode(x, lengths)
        with torch.no_grad():
            expert_lp, _ = self._expert[0].to(x.device)(x, lengths)
            a = viterbi_alignment(expert_lp, y, n, y_lengths)
        masked = block_mask(n, a.shape[1], hp.block).to(a.device)
        lp = self.net.impute(h, n, a.masked_fill(masked, self.net.mask_id))
        if hp.loss == "imputation":
            return imputation_loss(lp, y, n, y_lengths, a.masked_fill(masked, -1)).mean()
        return imitation_loss(lp, a, masked, n).mean()

    def eval_loss(self, batch) -> torch.Tensor | None:
        """CTC's loss for the expert; the Imputer's needs the expert, which a release does not carry: none."""
        return self.loss(batch) if self.hparams.loss == "ctc" else None

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.prepare_expert()
        if stage == "fit" and self.hparams.loss != "ctc" and not self._expert:
            raise ValueError(f"loss={self.hparams.loss!r} learns from an expert's alignments: pass "
                             "--model.init_args.expert=<a release of this model trained with loss=ctc> (e.g. "
                             "imputer-ctc-synth)")
        super().setup(stage)

    def analyse(self, folder: Path, datamodule: Any = None) -> dict[str, Any]:
        """The test set's phone error rate against the number of decoding passes: 1 (everything at once, CTC-like),
        2, 4 and B block-decoding passes, and one position per pass over the whole utterance (T' passes, the
        sequential limit); a table and a figure."""
        real = super().analyse(folder, datamodule)
        if datamodule is None or self.hparams.loss == "ctc" or not hasattr(datamodule, "test_dataloader"):
            return real
        datamodule.setup("test")
        self.eval()
        B = self.hparams.block
        runs: dict[str, tuple[int | None, int | None]] = {f"{s} pass{'es' * (s > 1)}": (B, s)
                                                          for s in sorted({1, 2, 4, B}) if s <= B}
        runs["one position per pass (T' passes)"] = (None, None)
        per: dict[str, float] = {}
        for name, (block, steps) in runs.items():
            metric = WordErrorRate()
            for x, lengths, y, y_lengths in datamodule.test_dataloader():
                x, lengths = x.to(self.device), lengths.to(self.device)
                if block is None:
                    T = int(self.net.subsample.out_lengths(lengths).max())
                    out = collapse(*block_decode(self.net, x, lengths, T, T))
                else:
                    out = collapse(*block_decode(self.net, x, lengths, block, steps))
                metric.update([self.phone_string(h) for h in out],
                              [self.phone_string(r[:n].tolist()) for r, n in zip(y, y_lengths)])
            per[name] = float(metric.compute())
        table = "| decoding | test PER |\n|---|---|\n" + "\n".join(f"| {k} | {v:.4f} |" for k, v in per.items())
        metrics = {f"test/per_{s}_steps": per[k] for k, (b, s) in runs.items() if s is not None}
        metrics["test/per_sequential"] = per["one position per pass (T' passes)"]
        figures = {}
        if folder is not None:
            figures["per_by_passes.png"] = self._passes_figure(per, Path(folder) / "per_by_passes.png")
        return {"metrics": {**metrics, **real.get("metrics", {})},
                "tables": {"Phone error rate by decoding passes": table, **real.get("tables", {})}, "figures": figures}

    @staticmethod
    def _passes_figure(per: dict[str, float], path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        names = list(per)
        ax.bar(range(len(names)), [per[n] for n in names], color="#4c72b0")
        ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=7)
        ax.set_ylabel("test phone error rate")
        ax.set_title("Imputer: block decoding passes")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, hp.warmup_steps)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
