"""Lightning glue for Deep Lambertian Networks: the priors learned from multi-image photometric-stereo estimates of
the training identities (contrastive divergence on each GRBM), the light estimator learned from images with known
lights, and the evaluation of single-image inference (relighting, normals, albedo, light) on held-out identities."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics

from zoo._module import ZooModule
from zoo._registry import register_model
from zoo.data.lambertian import photometric_stereo
from zoo.models.deep_lambertian.model import DeepLambertianNetwork, Latents, render
from zoo.nn.grbm import GRBM, ChainStats, sample_bernoulli

METRICS = ("relight_mse", "relight_mse_copy", "normal_deg", "albedo_mse", "light_deg", "light_net_deg")


def angle_deg(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The angle in degrees between vectors x and y [..., 3] (0 where either is 0)."""
    cos = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-12)
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


@register_model("deep_lambertian")
class DeepLambertianModule(ZooModule):
    """Deep Lambertian Networks (Tang, Salakhutdinov & Hinton, ICML 2012; arXiv 1206.6445).

    Batches are identities: (images [B, L, H, W], light [B, L, 3], identity [B], albedo [B, H, W], normal
    [B, H, W, 3]), as `zoo.data.lambertian` and the Yale B subject loader give them. Training: each identity's L
    images give albedo and normals by photometric stereo (shadowed pixels left out); each GRBM prior takes a CD-k step
    on those (the chains start at the data), and the linear light estimator a squared-error step on every image with
    its known light. Validation and test: each of `probes` images per identity on its own (one image, unknown light)
    goes through the Gibbs sampler, and the posterior means are scored:
      relight_mse   the identity's other images predicted by re-rendering (a, N) under their lights (the inferred
                    light's intensity kept): mean squared error per pixel;
      relight_mse_copy  the same error for the baseline that predicts every other image by the probe itself;
      normal_deg    mean angle between inferred and true normals over the object (photometric stereo where the
                    truth is unknown); albedo_mse: a ⊙ |ℓ| against the true albedo (renders only);
      light_deg     angle of the inferred light, light_net_deg: of the estimator's starting value.

    Args:
        image_size: H = W of the images (P = image_size² pixels).
        hidden_albedo, hidden_normal: hidden units of the two GRBM priors; init_var: their starting σ².
        noise_std: σ_v of the Lambertian image model; light_std: σ_ℓ of the light prior.
        cd_steps: Gibbs steps of each CD negative chain; persistent: keep the chains between steps (PCD).
        learn_var: learn the GRBMs' variances (else they stay at init_var, in standardised units).
        lr, weight_decay: Adam on the priors and the light estimator (weight decay on the GRBMs' W only).
        shadow: pixel values at or below it count as shadow and are left out of photometric stereo;
            mask_shadows: also treat them as unobserved in the image model (`DeepLambertianNetwork`).
        infer_steps, burn_in, sample: the inference chain (`DeepLambertianNetwork.infer`).
        probes: images per identity inferred in validation (evenly spaced over the lights; test uses all).
        seed: seeds the chains. weights: a zoo checkpoint to start from; not saved as a hyperparameter.
    """

    def __init__(self, image_size: int = 32, hidden_albedo: int = 256, hidden_normal: int = 256,
                 noise_std: float = 0.02, light_std: float = 2.0, init_var: float = 1.0, cd_steps: int = 10,
                 persistent: bool = True, learn_var: bool = False, lr: float = 1e-3, weight_decay: float = 0.0,
                 shadow: float = 0.02, mask_shadows: bool = False, infer_steps: int = 100, burn_in: int = 50,
                 sample: bool = True, probes: int = 5, seed: int = 0, weights: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["weights"])
        self.net = DeepLambertianNetwork(image_size ** 2, hidden_albedo, hidden_normal, noise_std, light_std,
                                         init_var, shadow if mask_shadows else None)
        self.scores = torch.nn.ModuleDict({f"{s}_{m}": torchmetrics.MeanMetric()
                                           for s in ("val", "test") for m in METRICS})
        self._chains: dict[str, torch.Tensor] = {}
        self.init_weights_from(weights)

    def _generator(self, *keys: int) -> torch.Generator:
        seed = self.hparams.seed
        for k in keys:
            seed = (seed * 1_000_003 + k) % (2**63)
        return torch.Generator(device=self.device).manual_seed(seed)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> Latents:
        """Posterior means (albedo [B, P], normals [B, P, 3], light [B, 3]) of single images [B, H, W]."""
        hp = self.hparams
        return self.net.infer(images.flatten(1), hp.infer_steps, hp.burn_in, hp.sample, generator)

    # ---------------------------------------------------------------- training
    def cd_surrogate(self, which: str, prior: GRBM, x: torch.Tensor, steps: int, g: torch.Generator) -> torch.Tensor:
        """A scalar whose gradient is the CD-k gradient of −log p(x) (data statistics of ∂E/∂θ minus those of the
        chains' last states), so that backward and DDP's all-reduce carry it. With `persistent`, the chains continue
        from where the previous step left them (PCD, Tieleman 2008) instead of restarting at the data."""
        with torch.no_grad():
            pos, neg = ChainStats(prior), ChainStats(prior)
            pos.add(x, sample_bernoulli(prior.p_h_given_v(x), g))
            start = x
            if self.hparams.persistent:
                start = self._chains.get(which)
                start = x if start is None or start.shape != x.shape else start
            end, _ = prior.gibbs(start, steps, g, neg, burn_in=steps - 1)
            if self.hparams.persistent:
                self._chains[which] = end
            g_pos, g_neg = pos.grad(prior), neg.grad(prior)
        return sum((p * (g_pos[k] - g_neg[k])).sum() for k, p in prior.named_parameters())

    @torch.no_grad()
    def on_fit_start(self) -> None:
        """Before the first step of a fresh model: the priors' standardisation from the photometric-stereo albedo and
        normals of every training identity (the same on every rank: each reads the whole training set)."""
        if bool(self.net.standardised) or self.trainer.datamodule is None:
            return
        albedo, normal = [], []
        for batch in self.trainer.datamodule.train_dataloader():
            a, n = photometric_stereo(batch[0].to(self.device), batch[1].to(self.device), self.hparams.shadow)
            albedo.append(a.flatten(1)), normal.append(n.flatten(1))
        self.net.set_standardisation(torch.cat(albedo), torch.cat(normal))

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        images, light = batch[0], batch[1]
        B, L = images.shape[:2]
        g = self._generator(self.global_rank, self.global_step)
        albedo, normal = photometric_stereo(images, light, hp.shadow)
        net = self.net
        xa = (albedo.flatten(1) - net.albedo_mean) / net.albedo_std
        xn = (normal.flatten(1) - net.normal_mean) / net.normal_std
        loss_a = self.cd_surrogate("albedo", self.net.albedo_prior, xa, hp.cd_steps, g)
        loss_n = self.cd_surrogate("normal", self.net.normal_prior, xn, hp.cd_steps, g)
        light_mse = (self.net.estimate_light(images.flatten(2)) - light).pow(2).sum(-1).mean()
        with torch.no_grad():
            for name, prior, x in (("albedo", self.net.albedo_prior, xa), ("normal", self.net.normal_prior, xn)):
                self.log(f"train/{name}_recon_mse", prior.reconstruction_error(x), batch_size=B)
        self.log("train/light_mse", light_mse, prog_bar=True, batch_size=B)
        return loss_a + loss_n + light_mse

    def configure_optimizers(self):
        hp = self.hparams
        priors = (self.net.albedo_prior, self.net.normal_prior)
        return torch.optim.Adam([
            {"params": [p.W for p in priors], "weight_decay": hp.weight_decay},
            {"params": [q for p in priors for q in (p.b, p.mu, *([p.log_var] if hp.learn_var else []))]
             + list(self.net.light_net.parameters()), "weight_decay": 0.0},
        ], lr=hp.lr)

    # ---------------------------------------------------------------- evaluation
    def probe_lights(self, L: int, stage: str) -> torch.Tensor:
        if stage == "test" or self.hparams.probes >= L:
            return torch.arange(L)
        return torch.linspace(0, L - 1, self.hparams.probes).round().long()

    def single_image(self, batch, batch_idx: int, probes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference on each probe image alone and its scores, per image ([B, k] each), plus the latents."""
        images, light, _, albedo, normal = batch
        B, L, H, W = images.shape
        k = len(probes)
        v = images[:, probes].reshape(B * k, H * W)
        z = self.net.infer(v, self.hparams.infer_steps, self.hparams.burn_in, self.hparams.sample,
                           self._generator(1, self.global_rank, batch_idx))
        ell_true = light[:, probes].reshape(B * k, 3)
        scale = z.light.norm(dim=-1)  # the inferred light's intensity, kept when relighting
        targets = light.repeat_interleave(k, 0) * scale[:, None, None]  # [B k, L, 3]
        relit = render(z.albedo[:, None], z.normal[:, None], targets)  # [B k, L, P]
        truth = images.repeat_interleave(k, 0).flatten(2)
        other = torch.ones(B * k, L, dtype=torch.bool, device=v.device)
        other[torch.arange(B * k), probes.repeat(B)] = False
        err = (relit - truth).pow(2).mean(-1)
        copy = (v[:, None] - truth).pow(2).mean(-1)
        out = {"relight_mse": (err * other).sum(1) / other.sum(1),
               "relight_mse_copy": (copy * other).sum(1) / other.sum(1),
               "light_deg": angle_deg(z.light, ell_true),
               "light_net_deg": angle_deg(self.net.estimate_light(v), ell_true)}
        known = torch.isfinite(normal.flatten(1)).all(1)
        ref_n = torch.where(known[:, None, None, None], normal.nan_to_num(),
                            photometric_stereo(images, light, self.hparams.shadow)[1])
        ref_n = ref_n.flatten(1, 2).repeat_interleave(k, 0)
        obj = ref_n.norm(dim=-1) > 0
        ang = angle_deg(z.normal, ref_n)
        out["normal_deg"] = (ang * obj).sum(1) / obj.sum(1).clamp_min(1)
        if known.all():
            a_true = albedo.flatten(1).repeat_interleave(k, 0)
            out["albedo_mse"] = (z.albedo * scale[:, None] - a_true).pow(2).mean(1)
        return {**out, "latents": z}

    def evaluate(self, batch, batch_idx: int, stage: str) -> None:
        out = self.single_image(batch, batch_idx, self.probe_lights(batch[0].shape[1], stage))
        bs = len(batch[0])
        for m in METRICS:
            if m in out:
                self.scores[f"{stage}_{m}"].update(out[m])
                self.log(f"{stage}/{m}", self.scores[f"{stage}_{m}"], prog_bar=m == "relight_mse", batch_size=bs)

    def validation_step(self, batch, batch_idx):
        self.evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self.evaluate(batch, batch_idx, "test")

    # ---------------------------------------------------------------- the paper's measurements
    def analyse(self, folder: Path | None, datamodule=None) -> dict[str, Any]:
        """One-shot identification under novel lights and relighting pictures (analysis.py)."""
        if datamodule is None:
            return {}
        from zoo.models.deep_lambertian.analysis import analyse

        return analyse(self, datamodule, folder)
