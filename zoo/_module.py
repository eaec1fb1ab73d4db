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
    #: state-dict keys whose shape the data sets (a tokenizer kept as bytes); loading resizes them, not refuses
    data_shaped_keys: ClassVar[tuple[str, ...]] = ()

    def init_weights_from(self, weights: str | None) -> None:
        if weights:
            from zoo._hub import load_weights_into

            load_weights_into(self, weights)

    def defer_pretrained(self, pretrained: str | None, weights: str | None, what: str) -> None:
        """Keep `pretrained` (a release to start training from, `what` it is) for `take_pretrained` when training
        sets up, so a recipe builds before that release exists and a release of this model loads without it;
        refused together with `weights` (this model's own release to go on from)."""
        if pretrained and weights:
            raise ValueError(f"give `pretrained` ({what}) or `weights` (this model's release to go on from), not both")
        self.__dict__["_pretrained"] = pretrained  # not a parameter, buffer or hyperparameter

    def take_pretrained(self) -> str | None:
        """The deferred `pretrained` source the first time (loading it is the caller's), None afterwards."""
        source = self.__dict__.get("_pretrained")
        self.__dict__["_pretrained"] = None
        return source

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


class ZooPhoneRecognizer(ZooModule):
    """A phone recogniser over filterbank frames (the speech papers): `forward(x, lengths)` returns phone ids
    (1..K) per utterance; `loss(batch)` the training loss. This base scores them by the phone error rate (torchmetrics'
    word error rate over phone strings, TIMIT's 61 phones folded to 39), checks the data module's phones and inputs,
    keeps the training data's feature statistics in buffers released with the weights, and transcribes audio.
    Subclasses call `self.init_speech(in_features)` after `save_hyperparameters` (hparams `phone_set`,
    `in_features`)."""

    def init_speech(self, in_features: int) -> None:
        from torchmetrics.text import WordErrorRate

        self.per = torch.nn.ModuleDict({s: WordErrorRate() for s in ("val", "test")})
        # the training data's statistics, taken from the data module when fitting and released with the weights, so
        # that `transcribe` normalises new audio as the network's inputs were
        self.register_buffer("feature_mean", torch.zeros(in_features))
        self.register_buffer("feature_std", torch.ones(in_features))

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
        from zoo.data.speech import PHONE_SETS, fold_39

        phones = [PHONE_SETS[self.hparams.phone_set][i - 1] for i in ids]
        return " ".join(fold_39(phones) if self.hparams.phone_set == "timit61" else phones)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[1]))
        return loss

    def evaluate(self, batch, stage: str) -> None:
        x, lengths, y, y_lengths = batch
        hyp = [self.phone_string(h) for h in self(x, lengths)]
        ref = [self.phone_string(r[:n].tolist()) for r, n in zip(y, y_lengths)]
        self.per[stage].update(hyp, ref)
        self.log(f"{stage}/per", self.per[stage], prog_bar=stage == "val", batch_size=len(lengths))
        loss = self.eval_loss(batch)
        if loss is not None:
            self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=len(lengths))

    def eval_loss(self, batch) -> torch.Tensor | None:
        """The loss logged in validation and test (None: none)."""
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, "test")

    def analyse(self, folder: Path, datamodule: Any = None) -> dict[str, Any]:
        """The phone error rate on the real recordings of CMU Sphinx's test data (zoo.data.speech.real_clips,
        resampled to the training audio's rate), where they are installed and the model's phones are CMUdict's:
        `real/per` and a table of each clip's reference and recognised phones."""
        from torchmetrics.text import WordErrorRate

        from zoo.data.speech import find_cmudict, read_audio, read_cmudict, real_clips, words_to_phones

        clips = real_clips()
        if not clips or self.hparams.phone_set != "cmudict39" or not hasattr(datamodule, "sample_rate"):
            return {}
        import librosa

        lexicon = read_cmudict(getattr(datamodule, "cmudict", None) or find_cmudict())
        metric, rows = WordErrorRate(), []
        for uid, path, words in clips:
            audio, rate = read_audio(path)
            audio = torch.from_numpy(librosa.resample(audio[0].numpy(), orig_sr=rate,
                                                      target_sr=datamodule.sample_rate))
            ref = " ".join(words_to_phones(words, lexicon))
            hyp = self.transcribe(audio, datamodule.sample_rate, datamodule.n_mels, datamodule.order)
            metric.update([hyp], [ref])
            rows.append(f"| {uid} | {' '.join(words)} | {ref} | {hyp} |")
        per = float(metric.compute())
        table = ("| clip | words | reference phones | recognised phones |\n|---|---|---|---|\n" + "\n".join(rows) +
                 f"\n\nPhone error rate over the {len(clips)} clips: {per:.4f}")
        return {"metrics": {"real/per": per}, "tables": {"Real recordings (CMU Sphinx test data)": table}}

    @torch.no_grad()
    def transcribe(self, audio: torch.Tensor, rate: int, n_mels: int = 40, order: int = 2) -> str:
        """The phone string of one recording (mono samples [n] in [-1, 1] at `rate` Hz, as the training audio),
        its features normalised with the training data's statistics saved in this module."""
        from zoo.data.speech import filterbank_features

        x = (filterbank_features(audio, rate, n_mels, order=order) - self.feature_mean) / self.feature_std
        self.eval()
        return self.phone_string(self(x[None], torch.tensor([len(x)]))[0])
