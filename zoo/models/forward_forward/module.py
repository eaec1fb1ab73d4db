"""Lightning glue for Forward-Forward: local losses summed into one step (they share no gradient), the
supervised (§3.3) and unsupervised (§3.2) versions with fully connected or local-receptive-field layers, their
backprop twin of the same shape, the analyses `zoo reproduce` runs and the figures shown in the model card."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo._module import ZooClassifier
from zoo._registry import register_model
from zoo.models.baselines.module import CrossEntropyClassifier
from zoo.models.forward_forward.model import (FFNet, FFStack, LocalFFNet, PeerNorm, ff_loss, goodness,
                                              hybrid_images, hybrid_masks, length_normalise, overlay_label,
                                              overlay_neutral, readout)
from zoo.nn.local import LocallyConnectedNet
from zoo.optim import fit_in_memory, with_cooldown


class _FFModule(ZooClassifier):
    """What every Forward-Forward module shares: the per-step random generator, the layers' goodness and
    peer-normalisation losses, and SGD with separate settings for the FF layers and the linear classifier.
    Subclasses set `self.net` (an FFStack), `self.peer` (one PeerNorm per layer) and `self.classifier`."""

    head_keys = ("classifier.*",)
    net: FFStack

    def _step_generator(self, device: torch.device) -> torch.Generator:
        """Seeded by (seed, rank, step) only, so negatives are the same after `--ckpt_path` resume and differ
        between DDP ranks."""
        g = torch.Generator(device=device)
        g.manual_seed((self.hparams.seed * 1_000_003 + self.global_rank) * 1_000_003 + self.global_step)
        return g

    def _theta(self, h: torch.Tensor) -> float:
        return self.hparams.threshold if self.hparams.threshold is not None else float(h.shape[1])

    def layer_losses(self, hs: list[torch.Tensor], B: int, with_stats: bool = False
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Σ_l the goodness loss of layer l on its positive half hs[l][:B] and negative half hs[l][B:]; peer
        normalisation (`PeerNorm`) adds its term to the gradient of the positive activities."""
        loss, stats = hs[0].new_zeros((), dtype=torch.float32), {}
        for i, h in enumerate(hs):
            g = torch.cat([goodness(self.peer[i](h[:B])), goodness(h[B:])])
            theta = self._theta(h)
            layer_loss = ff_loss(g[:B], g[B:], theta)
            loss = loss + layer_loss
            if with_stats:
                stats[f"train/ff_loss_{i}"] = layer_loss.detach()
                stats[f"train/ff_sep_{i}"] = torch.cat([g[:B] > theta, g[B:] <= theta]).float().mean()
        return loss, stats

    def local_losses(self, x: torch.Tensor, y: torch.Tensor, with_stats: bool = False
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def _plus_readout(self, loss: torch.Tensor, stats: dict[str, torch.Tensor], logits: torch.Tensor,
                      y: torch.Tensor, with_stats: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The layers' loss plus the softmax read-out's cross-entropy on its logits (of detached features)."""
        ce = F.cross_entropy(logits, y)
        if with_stats:
            stats["train/ce"] = ce.detach()
        return loss + ce, stats

    def training_step(self, batch, batch_idx):
        # per-layer diagnostics only on logging steps: each self.log call costs about 1% of a step here
        detail = self.global_step % self.trainer.log_every_n_steps == 0
        total, stats = self.local_losses(*batch, with_stats=detail)
        self.log("train/loss", total.detach(), prog_bar=True)
        if detail:
            self.log_dict(stats)
        return total

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD([
            {"params": [*self.net.parameters()], "lr": hp.lr, "weight_decay": hp.weight_decay},
            {"params": [*self.classifier.parameters()], "lr": hp.classifier_lr,
             "weight_decay": hp.classifier_weight_decay},
        ], momentum=hp.momentum)
        return with_cooldown(opt, self.planned_epochs, hp.cooldown)


@register_model("forward_forward")
class ForwardForward(_FFModule):
    """Supervised Forward-Forward (§3.3 of arXiv 2212.13345).

    Args:
        in_features: pixels per image; the first `num_classes` of them carry the label.
        hidden: units per hidden layer (the paper: 4 x 2000).
        num_classes: labels written into the image.
        threshold: θ in p = σ(G − θ); None means the number of units in the layer (the reference code).
        negatives: how each wrong label is drawn: `hard` from the softmax read-out's predictions with the
            true label excluded (Hinton's Matlab code), or `uniform` among the wrong labels.
        peer_norm: λ of peer normalisation, the term λ·(m̄ − m_j) added to each unit's gradient (0 turns
            it off; see `PeerNorm`); peer_momentum: the running mean's decay.
        relu_full_grad: pass gradients through the ReLU unchanged, as the Matlab code does.
        lr, momentum, weight_decay: SGD for the Forward-Forward layers.
        classifier_lr, classifier_weight_decay: SGD for the linear softmax on the activities.
        cooldown: keep the learning rate for half the epochs, then decay it linearly.
        seed: seeds the negative labels of each step (a function of seed, rank and step: exact resume).
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    def __init__(self, in_features: int = 784, hidden: list[int] = [1000, 1000, 1000], num_classes: int = 10,
                 threshold: float | None = None, negatives: str = "hard", peer_norm: float = 0.03,
                 peer_momentum: float = 0.9, relu_full_grad: bool = True, lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 3e-4, classifier_lr: float = 1e-2, classifier_weight_decay: float = 3e-3,
                 cooldown: bool = True, seed: int = 0, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        if negatives not in ("hard", "uniform"):
            raise ValueError(f"negatives={negatives!r}: choose 'hard' or 'uniform'")
        if num_classes >= in_features:
            raise ValueError(f"num_classes={num_classes} label pixels do not fit in in_features={in_features}")
        self.net = FFNet(in_features, list(hidden), relu_full_grad)
        self.peer = nn.ModuleList(PeerNorm(n, peer_norm, peer_momentum) for n in hidden)
        read = hidden[1:] if len(hidden) > 1 else hidden
        self.classifier = nn.Linear(sum(read), num_classes)
        self.metrics = nn.ModuleDict({
            f"{stage}_{kind}": torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
            for stage in ("val", "test") for kind in ("goodness", "linear")
        })
        self.init_weights_from(weights)

    # ---------------------------------------------------------------- the two test-time classifiers
    def _readout(self, hs: list[torch.Tensor]) -> torch.Tensor:
        used = hs[1:] if len(hs) > 1 else hs
        return torch.cat([length_normalise(h) for h in used], dim=1)

    def linear_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax logits of the linear classifier on neutral-label activities (one forward pass)."""
        x = x.flatten(1)
        return self.classifier(self._readout(self.net(overlay_neutral(x, self.hparams.num_classes))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Accumulated goodness per label [B, C]: the paper's test-time rule is its argmax."""
        return self.net.label_goodness(x.flatten(1), self.hparams.num_classes)

    # ---------------------------------------------------------------- training
    def _negative_labels(self, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """One wrong label per example. `hard` (Hinton's Matlab code, ffnew.m): drawn from the softmax
        read-out's predicted distribution `logits` [B, C] with the true label's probability set to zero and
        the rest renormalised, so labels the network confuses with the true one come up most. `uniform`:
        any wrong label with probability 1/(C − 1)."""
        g = self._step_generator(y.device)
        if self.hparams.negatives == "uniform":
            shift = torch.randint(1, self.hparams.num_classes, y.shape, generator=g, device=y.device)
            return (y + shift) % self.hparams.num_classes
        wrong = logits.detach().float().scatter(1, y[:, None], float("-inf"))
        return torch.multinomial(wrong.softmax(1), 1, generator=g).squeeze(1)

    def local_losses(self, x: torch.Tensor, y: torch.Tensor, with_stats: bool = False
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The step's objective: every layer's goodness loss (+ peer normalisation) and the softmax read-out's
        cross-entropy, summed. They share no gradient (each layer's input is detached), so one backward
        pass gives each layer exactly the gradient of its own loss. `with_stats` adds per-layer diagnostics."""
        x, C = x.flatten(1), self.hparams.num_classes
        with torch.no_grad():
            feats = self._readout(self.net(overlay_neutral(x, C)))
        logits = self.classifier(feats)
        pos = overlay_label(x, y, C)
        neg = overlay_label(x, self._negative_labels(y, logits), C)
        loss, stats = self.layer_losses(self.net(torch.cat([pos, neg])), x.shape[0], with_stats)
        return self._plus_readout(loss, stats, logits, y, with_stats)

    def evaluate(self, batch, stage: str) -> None:
        x, y = batch
        self.metrics[f"{stage}_goodness"](self(x).argmax(1), y)
        self.metrics[f"{stage}_linear"](self.linear_logits(x).argmax(1), y)
        self.log(f"{stage}/acc", self.metrics[f"{stage}_goodness"], prog_bar=True)
        self.log(f"{stage}/acc_linear", self.metrics[f"{stage}_linear"], prog_bar=stage == "val")

    # ---------------------------------------------------------------- pictures for the model card
    def release_figures(self, folder: Path, datamodule=None) -> dict[str, Path]:
        """PNGs for the model card: the first layer's weights seen through each label (`_label_templates`)
        and, given the DataModule, the accumulated goodness of every label for the first 12 test images."""
        from zoo._plots import score_table

        classes = list(getattr(datamodule, "classes", ())) or [str(c) for c in range(self.hparams.num_classes)]
        figures = {}
        path = self._label_templates(folder / "receptive_fields.png", classes)
        if path is not None:
            figures[path.name] = path
        if datamodule is not None and getattr(datamodule, "test_set", None) is not None:
            x, y = datamodule.test_set.__getitems__(list(range(12)))
            with torch.no_grad():
                scores = self.eval()(x.to(self.device)).cpu()
            path = score_table(x[:, 0], scores, y, classes, folder / "goodness_by_label.png",
                               title="Accumulated goodness per label, the first 12 test images (red: true label, dot: prediction)")
            figures[path.name] = path
        return figures


    def _label_templates(self, path: Path, classes: list[str]) -> Path | None:
        """For each label c, T_c = Σ_j w_jc · w_j over the first layer's units j: their incoming weight
        vectors w_j weighted by their weight w_jc from label pixel c, i.e. the image pattern that drives the
        units label c excites. Single units' weights look like noise (digits, issue 11); this sum over all
        units keeps what label and image weights learned together, and is unstructured at random
        initialisation. Drawn on one colour scale with a colour bar, the label pixels left blank."""
        from zoo._plots import _pyplot, _save

        w = self.net.layers[0].weight.detach().float().cpu()
        C, D = self.hparams.num_classes, w.shape[1]
        side = int(round(D ** 0.5))
        if side * side != D:
            return None
        t = w[:, :C].T @ w
        t[:, :C] = float("nan")
        lim = float(t.nan_to_num().abs().max()) or 1.0
        plt = _pyplot()
        fig, axes = plt.subplots(1, C + 1, figsize=(1.1 * C + 0.8, 1.9), squeeze=False,
                                 gridspec_kw={"width_ratios": [1] * C + [0.08]})
        for c, ax in enumerate(axes[0, :C]):
            im = ax.imshow(t[c].view(side, side).numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(classes[c], fontsize=7)
            ax.axis("off")
        fig.colorbar(im, cax=axes[0, C])
        axes[0, C].tick_params(labelsize=6)
        return _save(fig, path, "What the first layer ties to each label c: Σ_j w_jc · (incoming weights of unit j) "
                                "over all units, one colour scale, label pixels blank")


class _UnsupervisedFF(_FFModule):
    """Unsupervised Forward-Forward (§3.2): training on real vs hybrid images, the linear softmax read-out,
    the analysis and the figures; subclasses build the network (`_build`) and draw its first layer."""

    def _build(self, net: FFStack, units: list[int]) -> None:
        hp = self.hparams
        if not 1 <= hp.readout_layers <= len(units):
            raise ValueError(f"readout_layers={hp.readout_layers} must be between 1 and the {len(units)} layers")
        self.net = net
        self.peer = nn.ModuleList(PeerNorm(n, hp.peer_norm, hp.peer_momentum) for n in units)
        self.classifier = nn.Linear(sum(units[-hp.readout_layers:]), hp.num_classes)
        self.metrics = nn.ModuleDict({s: torchmetrics.Accuracy(task="multiclass", num_classes=hp.num_classes)
                                      for s in ("val", "test")})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax's input: normalised activities of the last `readout_layers` layers for images x."""
        return readout(self.net(x.flatten(1)), self.hparams.readout_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C] of the linear softmax read-out."""
        return self.classifier(self.features(x))

    def negatives(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """This step's hybrid images for the image batch x [B, C, H, W], with their masks and pairing shift."""
        g = self._step_generator(x.device)
        B = x.shape[0]
        masks = hybrid_masks(B, tuple(x.shape[-2:]), self.hparams.blur_passes, g, x.device)
        shift = int(torch.randint(1, max(B, 2), (1,), generator=g, device=x.device)) % B
        return hybrid_images(x, masks, shift), masks, shift

    def local_losses(self, x: torch.Tensor, y: torch.Tensor, with_stats: bool = False
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Every layer's goodness loss (real vs hybrid) and peer normalisation, plus the read-out's
        cross-entropy on the detached positive-pass activities; they share no gradient."""
        B = x.shape[0]
        neg, _, _ = self.negatives(x)
        hs = self.net(torch.cat([x, neg]).flatten(1))
        loss, stats = self.layer_losses(hs, B, with_stats)
        feats = readout([h[:B].detach() for h in hs], self.hparams.readout_layers)
        return self._plus_readout(loss, stats, self.classifier(feats), y, with_stats)

    def evaluate(self, batch, stage: str) -> None:
        x, y = batch
        self.metrics[stage](self(x).argmax(1), y)
        self.log(f"{stage}/acc", self.metrics[stage], prog_bar=True)

    # ---------------------------------------------------------------- the paper's measurements
    @torch.no_grad()
    def _activities(self, x: torch.Tensor, chunk: int = 1000) -> list[torch.Tensor]:
        parts = [self.net(c.to(self.device).flatten(1)) for c in x.split(chunk)]
        return [torch.cat([p[i] for p in parts]).float() for i in range(len(self.net.layers))]

    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """Two measurements on the test set. (1) Per layer, how well goodness tells real images from hybrids
        (the FF objective itself, on unseen data), and the fraction of dead units (never active on a real
        test image: what peer normalisation is there to prevent). (2) The read-out comparison of §3.2: softmax classifiers
        fitted on frozen, normalised activities of the last three layers (the paper's read-out), of all
        layers (adding the first, which the paper's read-out leaves out), of each layer alone, and of the last three
        layers of the same network before training (what FF learning added), each trained the same way on
        `analysis_train_size` training images."""
        if datamodule is None:
            return {}
        datamodule.setup("fit")
        hp = self.hparams
        self.eval()
        test_x, test_y = datamodule.test_set.__getitems__(list(range(len(datamodule.test_set))))
        g = torch.Generator().manual_seed(hp.seed)
        masks = hybrid_masks(len(test_x), tuple(test_x.shape[-2:]), hp.blur_passes, g)
        shift = int(torch.randint(1, len(test_x), (1,), generator=g))
        pos, neg = self._activities(test_x), self._activities(hybrid_images(test_x, masks, shift))
        n_layers = len(pos)
        metrics: dict[str, float] = {}
        sep_rows = ["| layer | units | dead units | θ | mean G real / θ | mean G hybrid / θ | classified right at θ "
                    "| G(real) > G(its hybrid) |", "|---|---|---|---|---|---|---|---|"]
        goods = []
        for i, (h_real, h_hybrid) in enumerate(zip(pos, neg)):
            theta = self._theta(h_real)
            gp, gn = goodness(h_real).cpu(), goodness(h_hybrid).cpu()
            goods.append((gp / theta, gn / theta))
            acc = float(torch.cat([gp > theta, gn <= theta]).float().mean())
            ranked = float((gp > gn).float().mean())
            metrics[f"test/real_vs_hybrid_layer{i + 1}"] = acc
            metrics[f"test/real_above_hybrid_layer{i + 1}"] = ranked
            dead = float((h_real.amax(0) <= 0).float().mean())
            metrics[f"test/dead_units_layer{i + 1}"] = dead
            sep_rows.append(f"| {i + 1} | {h_real.shape[1]} | {dead:.4f} | {theta:g} | {float(gp.mean()) / theta:.3f} "
                            f"| {float(gn.mean()) / theta:.3f} | {acc:.4f} | {ranked:.4f} |")
        del neg  # the analysis holds several [N, units] activity sets: keep the peak low at paper scale

        n_train = min(hp.analysis_train_size, len(datamodule.train_set))
        pick = torch.randperm(len(datamodule.train_set), generator=torch.Generator().manual_seed(hp.seed))[:n_train]
        train_x, train_y = datamodule.train_set.__getitems__(pick.tolist())
        train_h = [length_normalise(h) for h in self._activities(train_x)]
        test_h = [length_normalise(h) for h in pos]
        k = hp.readout_layers
        last = list(range(n_layers - k, n_layers))
        choices = {"last": (f"last {k} (the paper's read-out)", last), "all": ("all layers", list(range(n_layers)))}
        choices.update({f"layer{i + 1}": (f"layer {i + 1} alone", [i]) for i in range(n_layers)})
        rows = ["| softmax reads | units | test accuracy |", "|---|---|---|"]
        for key, (name, layers) in choices.items():
            acc = self._probe(torch.cat([train_h[i] for i in layers], 1), train_y,
                              torch.cat([test_h[i] for i in layers], 1), test_y)
            metrics[f"test/acc_readout_{key}"] = acc
            rows.append(f"| {name} | {sum(test_h[i].shape[1] for i in layers)} | {acc:.4f} |")
            print(f"analyse: softmax on {name}: test accuracy {acc:.4f}", flush=True)
        torch.manual_seed(hp.seed)  # what the layers were worth before Forward-Forward training
        untrained = type(self)(**self.zoo_init_args()).to(self.device).eval()
        acc = self._probe(readout(untrained._activities(train_x), k), train_y,
                          readout(untrained._activities(test_x), k), test_y)
        metrics["test/acc_readout_last_untrained"] = acc
        rows.append(f"| last {k}, the same network untrained (random initial weights) "
                    f"| {sum(test_h[i].shape[1] for i in last)} | {acc:.4f} |")
        tables = {
            "Real vs hybrid test images: goodness per layer (p(real) = σ(G − θ))": "\n".join(sep_rows),
            f"Linear softmax on frozen normalised activities ({n_train} training images, {hp.analysis_epochs} "
            "epochs each)": "\n".join(rows),
        }
        figures = {}
        if folder is not None:
            path = self._goodness_figure(goods, Path(folder) / "goodness_real_vs_hybrid.png")
            figures[path.name] = path
        return {"metrics": metrics, "tables": tables, "figures": figures}

    def _probe(self, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor
               ) -> float:
        """Test accuracy of a linear softmax fitted on frozen features by minibatch SGD (the read-out's
        settings, `analysis_epochs` epochs)."""
        hp = self.hparams
        torch.manual_seed(hp.seed)
        lin = nn.Linear(train_x.shape[1], hp.num_classes).to(train_x.device)
        fit_in_memory(lin, lambda a, b: F.cross_entropy(lin(a), b), train_x, train_y.to(train_x.device),
                      hp.analysis_epochs, lr=hp.classifier_lr, momentum=hp.momentum,
                      weight_decay=hp.classifier_weight_decay, seed=hp.seed)
        with torch.no_grad():
            return float((lin(test_x).argmax(1).cpu() == test_y).float().mean())

    def _goodness_figure(self, goods: list[tuple[torch.Tensor, torch.Tensor]], path: Path) -> Path:
        from zoo._plots import _pyplot, _save

        plt = _pyplot()
        fig, axes = plt.subplots(1, len(goods), figsize=(2.6 * len(goods), 2.4), squeeze=False)
        for i, (ax, (gp, gn)) in enumerate(zip(axes[0], goods)):
            hi = float(torch.quantile(torch.cat([gp, gn]), 0.99)) or 1.0
            bins = torch.linspace(0, hi, 41).numpy()
            ax.hist(gp.clamp(max=hi).numpy(), bins=bins, alpha=0.6, label="real")
            ax.hist(gn.clamp(max=hi).numpy(), bins=bins, alpha=0.6, label="hybrid")
            ax.axvline(1.0, color="k", lw=0.8)
            ax.set_title(f"layer {i + 1}", fontsize=8)
            ax.set_xlabel("G / θ", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[0, 0].legend(fontsize=7)
        return _save(fig, path, "Goodness of real and hybrid test images (threshold at G = θ)")

    # ---------------------------------------------------------------- pictures for the model card
    def release_figures(self, folder: Path, datamodule=None) -> dict[str, Path]:
        """PNGs for the model card: hybrid negative examples made from the first 8 test images (each image, the
        next one, the mask, the hybrid) and the first layer's receptive fields."""
        from zoo._plots import _pyplot, _save

        figures = {}
        path = self._weights_figure(folder)
        if path is not None:
            figures[path.name] = path
        if datamodule is not None and getattr(datamodule, "test_set", None) is not None:
            x, _ = datamodule.test_set.__getitems__(list(range(8)))
            g = torch.Generator().manual_seed(self.hparams.seed)
            masks = hybrid_masks(8, tuple(x.shape[-2:]), self.hparams.blur_passes, g)
            rows = [("image x", x), ("image x'", x.roll(1, 0)), ("mask m", masks),
                    ("hybrid x·m + x'·(1−m)", hybrid_images(x, masks, 1))]
            plt = _pyplot()
            fig, axes = plt.subplots(4, 8, figsize=(8, 4.6))
            for r, (name, imgs) in enumerate(rows):
                for c in range(8):
                    img = imgs[c].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
                    axes[r, c].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
                    axes[r, c].axis("off")
                axes[r, 0].set_title(name, fontsize=7, loc="left")
            path = _save(fig, Path(folder) / "hybrid_negatives.png",
                         "Negative data of unsupervised Forward-Forward (§3.2): hybrids of the first 8 test images, "
                         "each with the next")
            figures[path.name] = path
        return figures

    def _weights_figure(self, folder: Path) -> Path | None:
        raise NotImplementedError


@register_model("forward_forward_unsupervised")
class ForwardForwardUnsupervised(_UnsupervisedFF):
    """Unsupervised Forward-Forward (§3.2 of arXiv 2212.13345) with fully connected layers.

    The layers never see a label: positive data is the real image, negative data a hybrid of two real images
    of the batch mixed through a blurred, thresholded random mask. A linear softmax reads the length-normalised
    activities of the last `readout_layers` hidden layers (the paper: the last three, leaving the first
    out). It trains alongside the layers on detached activities, so it never changes
    them; with the cooldown it settles on the final features (the paper trains it after the layers).

    Args:
        in_channels, image_size: the image shape (hybrids are made in image space).
        hidden: units per hidden layer (the paper's MNIST net: 4 x 2000 ReLUs, 100 epochs).
        num_classes: classes of the linear softmax read-out.
        readout_layers: how many of the last hidden layers the softmax reads.
        blur_passes: rounds of the [1/4, 1/2, 1/4] blur applied to the random bit mask (the paper says
            "repeatedly" without a number; 6 gives regions a few pixels across on 28 x 28 images).
        threshold, peer_norm, peer_momentum, relu_full_grad, lr, momentum, weight_decay, classifier_lr,
        classifier_weight_decay, cooldown: as in the supervised `forward_forward`.
        analysis_train_size, analysis_epochs: training images and epochs of the frozen-feature softmax
            classifiers that `analyse` fits to compare read-outs.
        seed: seeds each step's masks and pairings (a function of seed, rank and step: exact resume).
        weights: a zoo checkpoint to start from (fine-tuning); not saved as a hyperparameter.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, hidden: list[int] = [2000, 2000, 2000, 2000],
                 num_classes: int = 10, readout_layers: int = 3, blur_passes: int = 6,
                 threshold: float | None = None, peer_norm: float = 0.03, peer_momentum: float = 0.9,
                 relu_full_grad: bool = True, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 3e-4,
                 classifier_lr: float = 1e-2, classifier_weight_decay: float = 3e-3, cooldown: bool = True,
                 analysis_train_size: int = 10000, analysis_epochs: int = 10, seed: int = 0,
                 weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self._build(FFNet(in_channels * image_size * image_size, list(hidden), relu_full_grad), list(hidden))
        self.init_weights_from(weights)

    def _weights_figure(self, folder: Path) -> Path | None:
        from zoo._plots import weight_grid

        hp = self.hparams
        w = self.net.layers[0].weight.detach().float().cpu()[:64]
        w = w.view(-1, hp.in_channels, hp.image_size, hp.image_size).mean(1)
        return weight_grid(w, Path(folder) / "receptive_fields.png",
                           title="Unsupervised Forward-Forward: first-layer weights of units 0-63 (by index, "
                                 "not selected), each on its own scale (red +, blue −)")


@register_model("forward_forward_localrf")
class ForwardForwardLocalRF(_UnsupervisedFF):
    """Unsupervised Forward-Forward (§3.2) with local receptive fields and no weight sharing, which the paper
    reports improves on the fully connected net (MNIST, 60 epochs, with peer normalisation; its error rate is
    not quoted here, as we could not check it against the paper text).

    Hidden layer l is a `channels[l]` x image_size x image_size topographic map; each unit sees a
    `kernel_size` x `kernel_size` patch of the layer below. The paper gives the size of its CIFAR-10
    networks (32 x 32 maps with 3 units per location, 11 x 11 receptive fields) but not of its MNIST one.
    Other arguments as in `forward_forward_unsupervised`.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [3, 3, 3, 3],
                 kernel_size: int = 11, num_classes: int = 10, readout_layers: int = 3, blur_passes: int = 6,
                 threshold: float | None = None, peer_norm: float = 0.03, peer_momentum: float = 0.9,
                 relu_full_grad: bool = True, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 3e-4,
                 classifier_lr: float = 1e-2, classifier_weight_decay: float = 3e-3, cooldown: bool = True,
                 analysis_train_size: int = 10000, analysis_epochs: int = 10, seed: int = 0,
                 weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        units = [c * image_size * image_size for c in channels]
        self._build(LocalFFNet(in_channels, image_size, list(channels), kernel_size, relu_full_grad), units)
        self.init_weights_from(weights)

    def _weights_figure(self, folder: Path) -> Path | None:
        """The receptive fields, drawn in place on the image, of the first layer's channel-0 units at a 5 x 5
        grid of map locations (summed over the input channels): columns of the layer's connection matrix."""
        from zoo._plots import weight_grid

        layer, hp = self.net.layers[0], self.hparams
        side = hp.image_size
        at = torch.linspace(0, side - 1, 5).round().long()
        units = (at.view(5, 1) * side + at.view(1, 5)).reshape(-1)  # channel 0, row-major map positions
        with torch.no_grad():
            fields = layer.dense_weight()[:, units].T.float().cpu()
        fields = fields.view(-1, hp.in_channels, side, side).sum(1)
        return weight_grid(fields, Path(folder) / "receptive_fields.png", cols=5,
                           title=f"Local receptive fields ({hp.kernel_size} x {hp.kernel_size}) of the first-layer "
                                 "units at a 5 x 5 grid of evenly spaced map positions, in place on the image")


@register_model("locally_connected")
class LocallyConnectedClassifier(CrossEntropyClassifier):
    """The backprop network of the same shape as a local-receptive-field Forward-Forward net: the same
    locally connected ReLU layers (zoo.nn.LocallyConnectedNet) and a linear softmax on the last one, trained
    end to end with cross-entropy and SGD."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: list[int] = [3, 3, 3, 3],
                 kernel_size: int = 11, num_classes: int = 10, lr: float = 1e-2, momentum: float = 0.9,
                 weight_decay: float = 3e-4, cooldown: bool = True, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = LocallyConnectedNet(in_channels, image_size, list(channels), kernel_size, num_classes)
        self._add_metrics(num_classes)
        self.init_weights_from(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        return with_cooldown(opt, self.planned_epochs, hp.cooldown)
