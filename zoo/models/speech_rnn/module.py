"""Lightning glue for Graves, Mohamed & Hinton 2013 (arXiv 1303.5778): a deep (bi)directional LSTM trained with CTC
or as an RNN transducer on filterbank frames, SGD with momentum, Gaussian weight noise (drawn once per batch, the
gradient taken at the noisy weights and applied to the clean ones), and the phone error rate (torchmetrics' word
error rate over phone strings; TIMIT's 61 phones folded to 39 first)."""
from __future__ import annotations

from typing import Literal

import torch
from zoo._module import ZooPhoneRecognizer
from zoo._registry import register_model
from zoo.data.speech import PHONE_SETS
from zoo.losses import transducer_loss
from zoo.models.speech_rnn.model import CTCNet, Transducer, best_path, ctc_beam_search, stack_frames


@register_model("speech_rnn")
class SpeechRecognizer(ZooPhoneRecognizer):
    """Phone recognition from filterbank frames (model.CTCNet or model.Transducer).

    Args:
        in_features: inputs per frame (123: 40 mels + energy with Δ, ΔΔ).
        phone_set: the output phones, plus the blank: "timit61" (scored after folding to 39) or "cmudict39"
            (LibriSpeech and the synthetic corpus); it must be the data module's.
        output: "ctc" or "transducer".
        hidden, layers, bidirectional: the deep LSTM (the paper's best: 3 layers of 250 cells per direction).
        pred_hidden, joint: the transducer's prediction LSTM and output-network sizes.
        weight_noise: standard deviation of the Gaussian noise added to every weight for each batch (0: none).
        stack: consecutive frames concatenated into one network input (1: the paper's 10 ms frames; the CPU
            recipes use 3, a third of the recurrent steps).
        optimizer: "sgd" (the paper: SGD with momentum) or "adam" (the CPU recipes, which have too few updates for
            SGD at 1e-4 to converge).
        lr, momentum: the learning rate (the paper: 1e-4) and SGD's momentum (the paper: 0.9).
        transcription_from: a CTC release (name or folder) whose deep LSTM starts the transducer's transcription
            network, with its feature statistics: the paper's PreTrans, less its phone-LM-initialised prediction
            network, which is not in the zoo. Like `weights`, not saved as a hyperparameter.
        beam: decoding in validation and test: 1 is CTC best path or greedy transducer decoding, more is beam search
            with that many hypotheses (CTC prefix beam search, or the transducer's beam search), one utterance
            at a time.
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    head_keys = ("net.output.*",)

    def __init__(self, in_features: int = 123, phone_set: Literal["timit61", "cmudict39"] = "timit61",
                 output: Literal["ctc", "transducer"] = "ctc",
                 hidden: int = 250, layers: int = 3, bidirectional: bool = True, pred_hidden: int = 250,
                 joint: int = 250, weight_noise: float = 0.075, stack: int = 1,
                 optimizer: Literal["sgd", "adam"] = "sgd", lr: float = 1e-4, momentum: float = 0.9, beam: int = 1,
                 transcription_from: str | None = None, weights: str | None = None):
        super().__init__()
        if output not in ("ctc", "transducer"):
            raise ValueError(f"output must be 'ctc' or 'transducer', got {output!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        if stack < 1:
            raise ValueError(f"stack must be at least 1, got {stack}")
        if phone_set not in PHONE_SETS:
            raise ValueError(f"phone_set must be one of {sorted(PHONE_SETS)}, got {phone_set!r}")
        self.save_hyperparameters(ignore=["weights", "transcription_from"])  # a release loads without its start
        num_phones = len(PHONE_SETS[phone_set])
        inputs = in_features * stack
        self.net = (CTCNet(inputs, num_phones, hidden, layers, bidirectional) if output == "ctc" else
                    Transducer(inputs, num_phones, hidden, layers, bidirectional, pred_hidden, 1, joint))
        self.init_speech(in_features)
        self._noise: list[torch.Tensor] | None = None
        if transcription_from and output != "transducer":
            raise ValueError("transcription_from starts a transducer's transcription network: output='transducer'")
        self._transcription_from = transcription_from   # read when fitting starts (start_transcription)
        self.init_weights_from(weights)

    def start_transcription(self) -> None:
        """Load `transcription_from` into the transcription network (once; called when fitting starts, so that
        building the recipe does not need the release)."""
        from zoo._hub import load_state_strict, resolve

        source, self._transcription_from = self._transcription_from, None
        if not source:
            return
        src = resolve(source)
        if src.init_args.get("output") != "ctc":
            raise ValueError(f"{source} is not a CTC speech model (its output is {src.init_args.get('output')!r})")
        if src.init_args.get("stack", 1) != self.hparams.stack:
            raise ValueError(f"{source} stacks {src.init_args.get('stack', 1)} frames, this model "
                             f"{self.hparams.stack}: pass --model.init_args.stack={src.init_args.get('stack', 1)}")
        enc = {k[len("net.encoder."):]: v for k, v in src.state.items() if k.startswith("net.encoder.")}
        load_state_strict(self.net.encoder, enc)
        with torch.no_grad():
            self.feature_mean.copy_(src.state["feature_mean"])
            self.feature_std.copy_(src.state["feature_std"])

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """Decoded phone ids (1..K) per utterance (see `beam`)."""
        beam, ctc = self.hparams.beam, self.hparams.output == "ctc"
        x, lengths = stack_frames(x, lengths, self.hparams.stack)
        if beam <= 1:
            return best_path(self.net(x, lengths), lengths) if ctc else self.net.greedy(x, lengths)
        if ctc:
            lp = self.net(x, lengths)
            return [ctc_beam_search(lp[b], int(n), beam) for b, n in enumerate(lengths)]
        return [self.net.beam_search(x[b], int(n), beam) for b, n in enumerate(lengths)]

    def loss(self, batch) -> torch.Tensor:
        x, lengths, y, y_lengths = batch
        x, lengths = stack_frames(x, lengths, self.hparams.stack)
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

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.start_transcription()
        super().setup(stage)

    def configure_optimizers(self):
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
