"""Lightning glue for Grammar as a Foreign Language (arXiv 1412.7449): teacher-forced cross-entropy on linearised
trees, decoding (greedy or beam search) with the paper's repair of malformed output, and labelled-bracket F1 as
EVALB computes it (zoo.data.parsing.evalb, the gold parts of speech put back on the predicted tree)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.parsing import PTB_LABELS, Tree, delinearise, evalb, is_well_formed, target_tokens
from zoo.data.text import check_model_vocabulary, release_vocabulary
from zoo.models.seq2seq_parser.model import Seq2SeqParser, sequence_loss


@register_model("seq2seq_parser")
class SequenceParser(ZooModule):
    """Constituency parsing as translation into a linearised tree (model.Seq2SeqParser).

    Args:
        vocab_size: words in the source vocabulary (the data module's; released beside the weights).
        labels: the constituent labels it can write (default: the Penn Treebank's 26).
        d, embed, layers, dropout, attention: the network (the paper: 3 layers of 256, LSTM+A).
        lr, clip: Adam's learning rate and the gradient-norm clip (not given by the paper: chosen here).
        beam: decoding in validation and test: 1 is greedy, more is beam search one sentence at a time (the paper:
            10, and says a beam of 1 costs little).
        max_len_ratio: at most this many output tokens per word, plus 10.
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    head_keys = ("net.output.*",)

    def __init__(self, vocab_size: int = 1000, labels: list[str] | None = None, d: int = 256, embed: int = 256,
                 layers: int = 3, dropout: float = 0.2, attention: bool = True, lr: float = 1e-3, clip: float = 5.0,
                 beam: int = 1, max_len_ratio: int = 4, weights: str | None = None):
        super().__init__()
        labels = list(labels or PTB_LABELS)
        self.save_hyperparameters(ignore=["weights"])
        self.hparams.labels = labels
        self.tokens = target_tokens(labels)
        self.net = Seq2SeqParser(vocab_size, len(self.tokens), d, embed, layers, dropout, attention)
        self._counts: dict[str, torch.Tensor] = {}   # per stage: matched, gold, test, malformed, sentences
        self.init_weights_from(weights)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "labels"):
            return
        check_model_vocabulary(self.hparams.vocab_size, dm, stage)
        if list(dm.labels) != self.hparams.labels:
            raise ValueError(f"the data's labels {list(dm.labels)} are not the model's {self.hparams.labels}: pass the "
                             "same --data.init_args.labels and --model.init_args.labels")

    def loss(self, batch) -> torch.Tensor:
        src, n, tgt, _, _ = batch
        start = torch.ones_like(tgt[:, :1])
        return sequence_loss(self.net(src, n, torch.cat([start, tgt[:, :-1]], 1)), tgt)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[1]))
        return loss

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
        """The decoded tree tokens of each sentence (before repair)."""
        max_len = int(lengths.max()) * self.hparams.max_len_ratio + 10
        if self.hparams.beam <= 1:
            ids = self.net.greedy(src, lengths, max_len)
        else:
            ids = [self.net.beam_search(src[b], int(lengths[b]), self.hparams.beam, max_len)
                   for b in range(len(lengths))]
        return [[self.tokens[i] for i in s] for s in ids]

    def trees(self, batch) -> tuple[list[Tree], list[Tree], int]:
        """(gold trees, repaired predicted trees, how many predictions needed repair), over placeholder words with
        the gold tags reduced to punctuation or not (all that scoring reads)."""
        src, n, tgt, tn, punct = batch
        gold, test, repaired = [], [], 0
        for b, out in enumerate(self(src, n)):
            k = int(n[b])
            words = [str(i) for i in range(k)]
            tags = ["." if p else "XX" for p in punct[b, :k].tolist()]
            gold_tokens = [self.tokens[i] for i in tgt[b, : int(tn[b]) - 1].tolist()]
            gold.append(delinearise(gold_tokens, words, tags))
            test.append(delinearise(out, words, tags))
            repaired += not is_well_formed(out, k)
        return gold, test, repaired

    def _evaluate(self, batch, stage: str) -> None:
        """Add the batch's bracket counts (EVALB's sums are over sentences, so batches add up) to the epoch's."""
        gold, test, repaired = self.trees(batch)
        r = evalb(gold, test)
        counts = torch.tensor([r["matched"], r["gold"], r["test"], repaired, len(gold)], dtype=torch.float64)
        self._counts[stage] = self._counts.get(stage, 0) + counts
        self.log(f"{stage}/loss", self.loss(batch), sync_dist=True, batch_size=len(batch[1]))

    def _finish(self, stage: str) -> None:
        counts = self._counts.pop(stage, torch.zeros(5, dtype=torch.float64)).to(self.device)
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts).sum(0)
        matched, n_gold, n_test, bad, sentences = counts.tolist()
        p, r = matched / max(n_test, 1), matched / max(n_gold, 1)
        self.log_dict({f"{stage}/f1": 2 * p * r / (p + r) if p + r else 0.0, f"{stage}/precision": p,
                       f"{stage}/recall": r, f"{stage}/malformed": bad / max(sentences, 1)},
                      prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    def release_figures(self, folder: Path, datamodule: Any = None) -> dict[str, Path]:
        """The source vocabulary, saved beside the weights (vocabulary.json)."""
        return release_vocabulary(folder, datamodule)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val or self.hparams.clip,
                            gradient_clip_algorithm=gradient_clip_algorithm or "norm")
