"""Forward gradients (Ren, Kornblith, Liao & Hinton, "Scaling Forward Gradient With Local Losses", ICLR 2023):
unbiased gradient estimates from forward-mode directional derivatives, no backward pass.

    weight perturbation (FG-W, eq. 2):   ĝ_w = (∇_w L · v) v,       v ~ N(0, I) over the weights (one per batch)
    activity perturbation (FG-A, eq. 3): ĝ_z_i = (∇_z_i L_i · u_i) u_i,  u_i ~ N(0, I) over example i's activities,
                                         then ĝ_W = Σ_i x_i ĝ_z_iᵀ (the chain rule within the layer)

E[v vᵀ] = I makes both unbiased. FG-W's relative variance is about the number of weights; FG-A perturbs each
example independently and only a layer's outputs, so its relative variance is about the number of perturbed
activations, divided by up to the batch size when the examples' gradients agree. FG-A's gain is thus about the
weights per activation (the fan-in) when the examples' gradients are unrelated, and up to that times the batch size;
the shrunk LocalMixers of the catalogue have about 2.5 weights per activation and measure gains of 3 to 14 (claims
fg-activity-perturbation-lower-variance*). Directional derivatives come from `torch.func.jvp` (forward-mode AD),
never from a backward pass.

The LocalMixer (§5) makes the variance small enough to train: an MLP-Mixer on image patches whose blocks are cut
apart by stop-gradients (blockwise losses), and whose every block has a classification loss replicated per patch
and per channel group (§4, eqs. 4-5): each copy has the value of the block's loss, but its derivative flows only
through its own patch and group, so a perturbation is scored by the few losses it can reach.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

__all__ = [
    "weight_perturbed_gradient", "activity_gradient", "activity_perturbed_gradient", "layer_norm",
    "layer_norm_vjp", "MixerBlock", "LocalMixer", "replicated_cross_entropy", "true_gradients",
    "forward_gradients", "estimator_error",
]


# ---------------------------------------------------------------- the two estimators on one layer

def weight_perturbed_gradient(module: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """FG-W for every parameter of `module`: one JVP of `loss_fn` along a Gaussian direction over all weights."""
    params = {k: p.detach() for k, p in module.named_parameters()}
    tangents = {k: torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
                for k, p in params.items()}

    def loss_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(lambda *args: functional_call(module, p, args))

    _, directional = jvp(loss_of, (params,), (tangents,))
    return {k: directional * v for k, v in tangents.items()}


def activity_gradient(losses_of: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, u: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example FG-A of the batch mean of `losses_of(z)` [B] (example i's loss depends on z_i only).

    One JVP along u [B, ...] gives every example its own directional derivative d_i = ∇_z_i L_i · u_i, so the
    estimate ĝ_z_i = d_i u_i / B uses example i's direction and loss alone. Returns (losses, ĝ_z)."""
    losses, d = jvp(losses_of, (z,), (u,))
    if d.shape != z.shape[:1]:
        raise ValueError(f"losses_of must return one loss per example, shape {tuple(z.shape[:1])}; "
                         f"got {tuple(d.shape)}")
    return losses, d.view(-1, *[1] * (z.dim() - 1)) * u / z.shape[0]


def activity_perturbed_gradient(layer: nn.Linear, x: torch.Tensor,
                                losses_of_output: Callable[[torch.Tensor], torch.Tensor],
                                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """FG-A for a linear layer whose output z = layer(x) [B, N] feeds per-example losses [B] (the objective is
    their mean): one Gaussian direction per example over its outputs, then the exact chain rule to W and b."""
    with torch.no_grad():
        z = layer(x)
    u = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    _, g_z = activity_gradient(losses_of_output, z, u)
    return {"weight": g_z.T @ x, "bias": g_z.sum(0)}


# ---------------------------------------------------------------- normalisation without parameters

def layer_norm(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameter-free normalisation over the last dimension (a patch's features, or one group of them).
    Returns (y, 1/σ); the second is what `layer_norm_vjp` needs. The statistics are taken after subtracting the
    first element (the result is shift-invariant), so a constant vector, such as a blank image patch, maps to
    exact zeros instead of rounding noise blown up by 1/√eps."""
    x = x - x[..., :1].detach()
    mean = x.mean(-1, keepdim=True)
    inv = torch.rsqrt((x * x).mean(-1, keepdim=True) - mean * mean + eps)
    return (x - mean) * inv, inv


def layer_norm_vjp(y: torch.Tensor, inv: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """The gradient through `layer_norm` in closed form (§3.6: normalisation has no weights, so its exact
    derivative is local): dx = (dy − mean(dy) − y·mean(dy·y)) / σ."""
    return inv * (dy - dy.mean(-1, keepdim=True) - y * (dy * y).mean(-1, keepdim=True))


# ---------------------------------------------------------------- the LocalMixer

class Record(NamedTuple):
    """What the weight update of one linear layer needs from the forward pass: its input, its normalised output
    (where the activity perturbation is added, before the ReLU), 1/σ of that normalisation, the activation."""
    inp: torch.Tensor
    y: torch.Tensor
    inv: torch.Tensor
    post: torch.Tensor


class MixerBlock(nn.Module):
    """One LocalMixer block (Fig. 2): token mixing (one linear layer across patches; absent in the first block),
    a channel-mixing linear layer, then a grouped linear layer whose groups never exchange features; normalisation
    before and after every linear layer (per patch, and per group in grouped layers), ReLU, and a residual from the
    block's input (from the second block on). Input [B, P, in_dim] or [B, P, G, C]; output [B, P, G, C].

    The first block's pixel patches are not normalised before its first linear layer: a blank patch (common in
    (Fashion-)MNIST) would become a zero vector, the layer's output its bias alone, and normalising a near-zero bias
    has a gain up to 1/√eps that stalls learning; the dataset standardisation of the input stands in for it."""

    def __init__(self, in_dim: int, patches: int, channels: int, hidden: int, groups: int, token_mixing: bool):
        super().__init__()
        if hidden % groups or channels % groups:
            raise ValueError(f"hidden={hidden} and channels={channels} must be multiples of groups={groups}")
        self.patches, self.channels, self.hidden, self.groups = patches, channels, hidden, groups
        if token_mixing:
            self.token_weight = nn.Parameter(torch.empty(patches, patches))  # [out patch, in patch]
            self.token_bias = nn.Parameter(torch.zeros(patches))
        else:
            self.register_parameter("token_weight", None)
            self.register_parameter("token_bias", None)
        self.fc = nn.Linear(in_dim, hidden)
        self.group_weight = nn.Parameter(torch.empty(groups, hidden // groups, channels // groups))  # [G, in, out]
        self.group_bias = nn.Parameter(torch.zeros(groups, channels // groups))

    @property
    def residual(self) -> bool:
        return self.token_weight is not None

    @property
    def layers(self) -> list[str]:
        """The linear layers in forward order (what `noise_shapes` and the forward's records follow)."""
        return (["token"] if self.residual else []) + ["fc", "group"]

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the activity perturbations, one per linear layer, in forward order."""
        B, P, G = batch, self.patches, self.groups
        token = [(B, P, self.channels)] if self.residual else []
        return token + [(B, P, self.hidden), (B, P, G, self.channels // G)]

    def forward(self, x: torch.Tensor, noise: Sequence[torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, list[Record]]:
        B, P, G = x.shape[0], x.shape[1], self.groups
        noise = list(noise) if noise is not None else []
        records: list[Record] = []

        def activate(inp: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor | None = None):
            y, inv = layer_norm(pre)
            s = y + noise.pop(0) if noise else y
            post = F.relu(s if residual is None else s + residual)
            records.append(Record(inp, y, inv, post))
            return post

        h = x.reshape(B, P, -1)
        if self.residual:
            inp = layer_norm(h)[0]
            h = activate(inp, torch.einsum("bqd,pq->bpd", inp, self.token_weight) + self.token_bias[:, None])
        inp = layer_norm(h)[0] if self.residual else h  # the first block sees the standardised pixels
        h = activate(inp, self.fc(inp))
        inp = layer_norm(h.view(B, P, G, -1))[0]
        pre = torch.einsum("bpgi,gio->bpgo", inp, self.group_weight) + self.group_bias
        return activate(inp, pre, x if self.residual else None), records


class LocalMixer(nn.Module):
    """LocalMixer (§5, Table 2): the image cut into num_patches x num_patches patches, `num_blocks` MixerBlocks,
    one linear classifier per block for its local loss (on per-group-normalised, patch-averaged features) and a
    linear read-out on the normalised patch average of the last block. Initialised like the reference code: weights
    N(0, min(2/√fan_in, 0.1)²), biases zero, read-out zero. `forward` returns the read-out's class scores."""

    def __init__(self, image_size: int = 28, in_channels: int = 1, num_patches: int = 7, num_blocks: int = 2,
                 channels: int = 64, groups: int = 8, num_classes: int = 10, hidden: int | None = None):
        super().__init__()
        if image_size % num_patches:
            raise ValueError(f"image_size={image_size} is not divisible into num_patches={num_patches} per side")
        self.num_patches, self.patch = num_patches, image_size // num_patches
        P, hidden = num_patches ** 2, hidden or channels
        self.blocks = nn.ModuleList(
            MixerBlock(self.patch ** 2 * in_channels if i == 0 else channels, P, channels, hidden, groups, i > 0)
            for i in range(num_blocks))
        self.heads = nn.ModuleList(nn.Linear(channels, num_classes) for _ in range(num_blocks))
        self.readout = nn.Linear(channels, num_classes)
        for name, p in self.named_parameters():
            if name.endswith("bias") or name.startswith("readout"):
                nn.init.zeros_(p)
            else:  # [out, in] or, grouped, [G, in, out]: the fan-in is dimension 1 either way
                nn.init.normal_(p, std=min(2.0 / math.sqrt(p.shape[1]), 0.1))

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, P, patch·patch·C] with non-overlapping patches in row-major order."""
        B, C, n, s = x.shape[0], x.shape[1], self.num_patches, self.patch
        return x.reshape(B, C, n, s, n, s).permute(0, 2, 4, 3, 5, 1).reshape(B, n * n, s * s * C)

    def trunk(self, x: torch.Tensor, detach: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (block input, block output) for every block; `detach`: the stop-gradient between blocks."""
        h = self.patchify(x)
        for block in self.blocks:
            out = block(h)[0]
            yield h, out
            h = out.detach() if detach else out

    @staticmethod
    def head_features(out: torch.Tensor) -> torch.Tensor:
        """A block's output [B, P, G, C] normalised per patch and group, as its local classifier sees it."""
        return layer_norm(out)[0]

    @staticmethod
    def readout_features(out: torch.Tensor) -> torch.Tensor:
        """The last block's output averaged over patches and normalised: [B, G·C]."""
        return layer_norm(out.mean(1).flatten(1))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, (_, out) = self.trunk(x, detach=False)
        return self.readout(self.readout_features(out))


def replicated_cross_entropy(feats: torch.Tensor, head: nn.Linear, y: torch.Tensor) -> torch.Tensor:
    """The supervised local losses of one block, L[b, p, g] (eqs. 4-5): the cross-entropy of the head on the
    patch-averaged, group-concatenated features, copied for every patch p and group g, each copy seeing every other
    patch and group through a stop-gradient. feats [B, P, G, C] -> [B, P, G], all copies equal in value.

    Fused, as the paper's §5 does it: the copies are never materialised. x̄ = mean_p(x) and the cross-entropy CE(x̄)
    are computed without derivative; copy (p, g) adds the cross-entropy's first-order change along its own slice,
    (softmax − onehot) · W_g (x[p, g] − sg(x[p, g])) / P: zero in value, and exactly the copy's derivative (the
    forward-mode rule of softmax cross-entropy), computed in forward order, W times the slice first."""
    B, P, G, C = feats.shape
    logits = head(feats.detach().mean(1).flatten(1))  # [B, K]
    ce = F.cross_entropy(logits, y, reduction="none")
    err = F.softmax(logits, -1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)  # dCE/dlogits at x̄
    own = (feats - feats.detach()) / P
    dlogits = torch.einsum("bpgc,kgc->bpgk", own, head.weight.view(-1, G, C))
    return ce[:, None, None] + torch.einsum("bpgk,bk->bpg", dlogits, err)


# ---------------------------------------------------------------- gradients: true and forward

def _delta_rule(features: torch.Tensor, layer: nn.Linear, y: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """The exact gradient of the mean cross-entropy of one linear classifier on fixed features: (softmax − onehot)
    times the input, a local rule (the reference code computes the classifiers' gradients exactly, too)."""
    delta = (F.softmax(layer(features), -1) - F.one_hot(y, layer.out_features).to(features.dtype)) / len(y)
    return {f"{prefix}.weight": delta.T @ features, f"{prefix}.bias": delta.sum(0)}


def true_gradients(net: LocalMixer, x: torch.Tensor, y: torch.Tensor, local: bool) -> dict[str, torch.Tensor]:
    """Backprop's gradients. local=False: of the read-out's mean cross-entropy, end to end (the BP baseline).
    local=True: of every block's local loss with stop-gradients between blocks, plus the read-out on the detached
    last block (LG-BP: the true gradient that LG-FG-W/A estimate). Parameters without a gradient are left out."""
    with torch.enable_grad():
        loss = x.new_zeros(())
        for i, (_, out) in enumerate(net.trunk(x, detach=local)):
            if local:
                loss = loss + F.cross_entropy(net.heads[i](net.head_features(out).mean(1).flatten(1)), y)
        loss = loss + F.cross_entropy(net.readout(net.readout_features(out.detach() if local else out)), y)
        named = [(k, p) for k, p in net.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return {k: g for (k, _), g in zip(named, grads) if g is not None}


def _activity_weight_grads(records: list[Record], noise: Sequence[torch.Tensor], d: torch.Tensor, block: MixerBlock,
                           prefix: str) -> dict[str, torch.Tensor]:
    """FG-A weight estimates of one block from its directional derivatives d: [B, P, G] (local losses, already /B)
    or [B, 1, 1] (one global loss per example). Each activity's estimate uses only the losses it reaches: its
    patch and group, or (token mixing, before the groups split) its patch's losses summed over groups. Inactive
    ReLUs get zero (§3.6), and the exact derivatives of the normalisation and the linear map finish the chain."""
    B = d.shape[0]
    out: dict[str, torch.Tensor] = {}
    for kind, rec, u in zip(block.layers, records, noise):
        if kind == "token":
            g_s = d.sum(-1, keepdim=True) * u
        elif kind == "fc":
            g_s = (d[..., None] * u.view(B, u.shape[1], block.groups, -1)).view_as(u)
        else:
            g_s = d[..., None] * u
        g_pre = layer_norm_vjp(rec.y, rec.inv, g_s * (rec.post > 0))
        if kind == "token":
            out[f"{prefix}.token_weight"] = torch.einsum("bpd,bqd->pq", g_pre, rec.inp)
            out[f"{prefix}.token_bias"] = g_pre.sum((0, 2))
        elif kind == "fc":
            out[f"{prefix}.fc.weight"] = torch.einsum("bph,bpi->hi", g_pre, rec.inp)
            out[f"{prefix}.fc.bias"] = g_pre.sum((0, 1))
        else:
            out[f"{prefix}.group_weight"] = torch.einsum("bpgi,bpgo->gio", rec.inp, g_pre)
            out[f"{prefix}.group_bias"] = g_pre.sum((0, 1))
    return out


def _local_losses(net: LocalMixer, i: int, h: torch.Tensor, y: torch.Tensor,
                  noise: Sequence[torch.Tensor] | None = None, params: dict[str, torch.Tensor] | None = None):
    """Block i on input h (with activity noise, or with the given parameters): its replicated local losses
    [B, P, G] and, as JVP auxiliaries, (output, head features, records)."""
    block = net.blocks[i]
    out, records = block(h, noise) if params is None else functional_call(block, params, (h, None))
    feats = net.head_features(out)
    return replicated_cross_entropy(feats, net.heads[i], y), (out, feats, records)


def _noise(shapes: list[tuple[int, ...]], like: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
    return [torch.randn(s, generator=generator, dtype=like.dtype, device=like.device) for s in shapes]


@torch.no_grad()
def forward_gradients(net: LocalMixer, x: torch.Tensor, y: torch.Tensor, perturb: str = "activity",
                      local: bool = True, generator: torch.Generator | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward-gradient estimate for the LocalMixer's parameters (names as in `named_parameters`) and the
    step's losses. perturb: "activity" (FG-A) or "weight" (FG-W); local=True: every block learns from its own
    replicated local losses behind a stop-gradient (LG-FG-A / LG-FG-W, the paper's method), local=False: every
    block learns from the read-out's loss (FG-A / FG-W). The linear classifiers (local heads and the read-out, on
    detached features) get their exact delta-rule gradients in every variant, as in the reference code.

    LG-FG-W scores a grouped layer's group-g weights by group g's losses only; the token- and channel-mixing weights
    reach every group (through the normalisation after them), so all of the block's losses score them. (The
    reference code also splits the channel-mixing weights by group, which ignores that coupling and is biased.)"""
    if perturb not in ("activity", "weight"):
        raise ValueError(f"perturb must be 'activity' or 'weight', got {perturb!r}")
    B = x.shape[0]
    grads: dict[str, torch.Tensor] = {}
    logs: dict[str, torch.Tensor] = {}
    h = net.patchify(x)
    if local:
        local_loss = x.new_zeros(())
        for i, block in enumerate(net.blocks):
            if perturb == "activity":
                u = tuple(_noise(block.noise_shapes(B), x, generator))
                losses, d, (out, feats, records) = jvp(lambda *n: _local_losses(net, i, h, y, noise=n),
                                                       tuple(map(torch.zeros_like, u)), u, has_aux=True)
                grads.update(_activity_weight_grads(records, u, d / B, block, f"blocks.{i}"))
            else:
                params = {k: p.detach() for k, p in block.named_parameters()}
                v = dict(zip(params, _noise([p.shape for p in params.values()], x, generator)))
                losses, d, (out, feats, _) = jvp(lambda p: _local_losses(net, i, h, y, params=p), (params,), (v,),
                                                 has_aux=True)
                per_group = d.sum((0, 1)) / B  # [G]: group g's losses are the only ones its grouped weights reach
                for k, t in v.items():
                    scale = per_group.view(-1, *[1] * (t.dim() - 1)) if k.startswith("group_") else per_group.sum()
                    grads[f"blocks.{i}.{k}"] = scale * t
            grads.update(_delta_rule(feats.mean(1).flatten(1), net.heads[i], y, f"heads.{i}"))
            local_loss = local_loss + losses.mean()
            h = out
        logs["local_loss"] = local_loss / len(net.blocks)
    else:
        def final_losses(out: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(net.readout(net.readout_features(out)), y, reduction="none")

        if perturb == "activity":
            shapes = [block.noise_shapes(B) for block in net.blocks]
            u = _noise([s for ss in shapes for s in ss], x, generator)

            def run(*n: torch.Tensor):
                out, all_records, k = h, [], 0
                for block, ss in zip(net.blocks, shapes):
                    out, records = block(out, n[k:k + len(ss)])
                    all_records.append(records)
                    k += len(ss)
                return final_losses(out), (out, all_records)

            _, d, (h, all_records) = jvp(run, tuple(torch.zeros_like(t) for t in u), tuple(u), has_aux=True)
            k = 0
            for i, (block, records) in enumerate(zip(net.blocks, all_records)):
                grads.update(_activity_weight_grads(records, u[k:k + len(records)], (d / B).view(B, 1, 1), block,
                                                    f"blocks.{i}"))
                k += len(records)
        else:
            params = {k: p.detach() for k, p in net.blocks.named_parameters()}
            v = dict(zip(params, _noise([p.shape for p in params.values()], x, generator)))

            def run_w(p: dict[str, torch.Tensor]):
                out = h
                for i, block in enumerate(net.blocks):
                    out = functional_call(block, {k[len(f"{i}."):]: t for k, t in p.items() if k.startswith(f"{i}.")},
                                          (out,))[0]
                return final_losses(out).mean(), out

            _, d, h = jvp(run_w, (params,), (v,), has_aux=True)
            grads.update({f"blocks.{k}": d * t for k, t in v.items()})
    feats = net.readout_features(h)
    grads.update(_delta_rule(feats, net.readout, y, "readout"))
    logs["loss"] = F.cross_entropy(net.readout(feats), y)
    return grads, logs


def estimator_error(net: LocalMixer, x: torch.Tensor, y: torch.Tensor, perturb: str, local: bool, samples: int,
                    generator: torch.Generator | None = None) -> dict[str, float]:
    """How far `samples` independent forward-gradient estimates of the blocks' weights land from the true gradient
    of the same objective (LG-BP's for local=True, BP's for local=False), on one batch:
      rel_mse   E‖ĝ − g‖² / ‖g‖²          (the estimator's variance, relative; §3.4)
      cosine    E cos(ĝ, g)
      rel_bias  ‖mean ĝ − g‖² / ‖g‖²      (≈ rel_mse / samples when the estimator is unbiased)"""
    true = true_gradients(net, x, y, local)
    names = [k for k in true if k.startswith("blocks.")]
    g = torch.cat([true[k].flatten() for k in names])
    norm = float(g.pow(2).sum())
    if norm == 0:
        raise ValueError("the true gradient is zero here (e.g. a zero read-out before training): nothing to compare")
    sq, cos, total = 0.0, 0.0, torch.zeros_like(g)
    for _ in range(samples):
        est = forward_gradients(net, x, y, perturb, local, generator)[0]
        e = torch.cat([est[k].flatten() for k in names])
        sq += float((e - g).pow(2).sum())
        cos += float(F.cosine_similarity(e, g, dim=0))
        total += e
    return {"rel_mse": sq / samples / norm, "cosine": cos / samples,
            "rel_bias": float((total / samples - g).pow(2).sum()) / norm}
