"""Lightning glue for Graves, Mohamed & Hinton 2013 (arXiv 1303.5778): a deep (bi)directional LSTM trained with CTC
or as an RNN transducer on filterbank frames, SGD with momentum, Gaussian weight noise (drawn once per batch, the
gradient taken at the noisy weights and applied to the clean ones), and the phone error rate (torchmetrics' word
error rate over phone strings; TIMIT's 61 phones folded to 39 first)."""
from __future__ import annotations

from typing import Literal

import torch
from torchmetrics.text import WordErrorRate

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.speech import PHONE_SETS, filterbank_features, fold_39
from zoo.losses import transducer_loss
from zoo.models.speech_rnn.model import CTCNet, Transducer, best_path, ctc_beam_search


@register_model("speech_rnn")
class SpeechRecognizer(ZooModule):
    """Phone recognition from filterbank frames (model.CTCNet or model.Transducer).

    Args:
        in_features: inputs per frame (123: 40 mels + energy with Δ, ΔΔ).
        phone_set: the output phones, plus the blank: "timit61" (scored after folding to 39) or "cmudict39"
            (LibriSpeech and the synthetic corpus); it must be the data module's.
        output: "ctc" or "transducer".
        hidden, layers, bidirectional: the deep LSTM (the paper's best: 3 layers of 250 cells per direction).
        pred_hidden, joint: the transducer's prediction LSTM and output-network sizes.
        weight_noise: standard deviation of the Gaussian noise added to every weight for each batch (0: none).
        lr, momentum: SGD (the paper: 1e-4 and 0.9).
        transcription_from: a CTC release (name or folder) whose deep LSTM starts the transducer's transcription
            network, with its feature statistics: the paper's PreTrans, less its phone-LM-initialised prediction
            network, which is not in the zoo. Like `weights`, not saved as a hyperparameter.
        beam: decoding in validation and test: 1 is CTC best path or greedy transducer decoding, more is beam search
            with that many hypotheses (CTC prefix beam search, or the transducer's beam search), one utterance
            at a time.
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    head_keys = ("net.output.*", "net.W_hy.*")

    def __init__(self, in_features: int = 123, phone_set: Literal["timit61", "cmudict39"] = "timit61",
                 output: Literal["ctc", "transducer"] = "ctc",
                 hidden: int = 250, layers: int = 3, bidirectional: bool = True, pred_hidden: int = 250,
                 joint: int = 250, weight_noise: float = 0.075, lr: float = 1e-4, momentum: float = 0.9,
                 beam: int = 1, transcription_from: str | None = None, weights: str | None = None):
        super().__init__()
        if output not in ("ctc", "transducer"):
            raise ValueError(f"output must be 'ctc' or 'transducer', got {output!r}")
        if phone_set not in PHONE_SETS:
            raise ValueError(f"phone_set must be one of {sorted(PHONE_SETS)}, got {phone_set!r}")
        self.save_hyperparameters(ignore=["weights", "transcription_from"])  # a release loads without its start
        num_phones = len(PHONE_SETS[phone_set])
        self.net = (CTCNet(in_features, num_phones, hidden, layers, bidirectional) if output == "ctc" else
                    Transducer(in_features, num_phones, hidden, layers, bidirectional, pred_hidden, 1, joint))
        self.per = torch.nn.ModuleDict({s: WordErrorRate() for s in ("val", "test")})
        # the training data's feature statistics, taken from the data module when fitting and released with the
        # weights, so that `transcribe` normalises new audio as the network's inputs were
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))
        self._noise: list[torch.Tensor] | None = None
        if transcription_from:
            self._start_transcription_from(transcription_from)
        self.init_weights_from(weights)

    def _start_transcription_from(self, source: str) -> None:
        from zoo._hub import load_state_strict, resolve

        if self.hparams.output != "transducer":
            raise ValueError("transcription_from starts a transducer's transcription network: output='transducer'")
        src = resolve(source)
        if src.init_args.get("output") != "ctc":
            raise ValueError(f"{source} is not a CTC speech model (its output is {src.init_args.get('output')!r})")
        enc = {k[len("net.encoder."):]: v for k, v in src.state.items() if k.startswith("net.encoder.")}
        load_state_strict(self.net.encoder, enc)
        with torch.no_grad():
            self.feature_mean.copy_(src.state["feature_mean"])
            self.feature_std.copy_(src.state["feature_std"])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Decoded phone ids (1..K) per utterance (see `beam`)."""
        beam, ctc = self.hparams.beam, self.hparams.output == "ctc"
        if beam <= 1:
            return best_path(self.net(x, lengths), lengths) if ctc else self.net.greedy(x, lengths)
        if ctc:
            lp = self.net(x, lengths)
            return [ctc_beam_search(lp[b], int(n), beam) for b, n in enumerate(lengths)]
        return [self.net.beam_search(x[b], int(n), beam) for b, n in enumerate(lengths)]

    def loss(self, batch) -> torch.Tensor:
        x, lengths, y, y_lengths = batch
        if self.hparams.output == "ctc":
            return self.net.loss(self.net(x, lengths), lengths, y, y_lengths)
        return transducer_loss(self.net(x, lengths, y), y, lengths, y_lengths)

    # ---- weight noise: on for the forward and backward pass, off before the optimiser steps
    def _weights(self) -> list[torch.Tensor]:
        return [p for p in self.net.parameters() if p.dim() >= 2]

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if self.hparams.weight_noise > 0:
            with torch.no_grad():
                self._noise = [torch.randn_like(p) * self.hparams.weight_noise for p in self._weights()]
                torch._foreach_add_(self._weights(), self._noise)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._noise is not None:
            with torch.no_grad():
                torch._foreach_sub_(self._weights(), self._noise)
            self._noise = None

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[1]))
        return loss

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "phone_set"):
            return
        hp = self.hparams
        if (dm.phone_set, dm.in_features) != (hp.phone_set, hp.in_features):
            raise ValueError(f"the data gives {dm.in_features} inputs per frame and {dm.phone_set} phones, the model "
                             f"expects {hp.in_features} and {hp.phone_set}: pass --model.init_args.phone_set="
                             f"{dm.phone_set} --model.init_args.in_features={dm.in_features}")
        if stage == "fit":
            dm.setup(stage)
            with torch.no_grad():
                self.feature_mean.copy_(dm.feature_mean)
                self.feature_std.copy_(dm.feature_std)

    def phone_string(self, ids: list[int]) -> str:
        """Phone ids as a space-separated string, what the phone error rate compares; TIMIT's 61 phones folded to
        the 39 scoring classes."""
        phones = [PHONE_SETS[self.hparams.phone_set][i - 1] for i in ids]
        return " ".join(fold_39(phones) if self.hparams.phone_set == "timit61" else phones)

    def _eval(self, batch, stage: str) -> None:
        x, lengths, y, y_lengths = batch
        hyp = [self.phone_string(h) for h in self(x, lengths)]
        ref = [self.phone_string(r[:n].tolist()) for r, n in zip(y, y_lengths)]
        self.per[stage].update(hyp, ref)
        self.log(f"{stage}/per", self.per[stage], prog_bar=stage == "val", batch_size=len(lengths))
        self.log(f"{stage}/loss", self.loss(batch), sync_dist=True, batch_size=len(lengths))

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    @torch.no_grad()
    def transcribe(self, audio: torch.Tensor, rate: int, n_mels: int = 40, order: int = 2) -> str:
        """The phone string of one recording (mono samples [n] in [-1, 1] at `rate` Hz, as the training audio),
        its features normalised with the training data's statistics saved in this module."""
        x = (filterbank_features(audio, rate, n_mels, order=order) - self.feature_mean) / self.feature_std
        self.eval()
        return self.phone_string(self(x[None], torch.tensor([len(x)]))[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
