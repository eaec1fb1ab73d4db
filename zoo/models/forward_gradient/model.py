"""Forward gradients (Ren, Kornblith, Liao & Hinton, "Scaling Forward Gradient With Local Losses", ICLR 2023):
unbiased gradient estimates from one forward-mode directional derivative, no backward pass.

    weight perturbation (FG-W):   ĝ_w = (∇_w L · v) v,             v ~ N(0, I) over the weights
    activity perturbation (FG-A): ĝ_z = (∇_z L · u) u, u ~ N(0, I) over a layer's outputs z = x Wᵀ + b,
                                  then ĝ_W = ĝ_zᵀ x and ĝ_b = Σ ĝ_z (the chain rule within the layer)

E[v vᵀ] = I makes both unbiased. FG-A perturbs far fewer numbers (outputs, not weights), so its variance is
much lower: the paper's central measurement. Directional derivatives come from `torch.func.jvp`
(forward-mode AD), never from a backward pass.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, jvp

__all__ = ["weight_perturbed_gradient", "activity_perturbed_gradient"]


def weight_perturbed_gradient(module: torch.nn.Module, loss_fn: Callable[[torch.nn.Module], torch.Tensor],
                              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """FG-W for every parameter of `module`: one JVP of `loss_fn` along a Gaussian direction over all weights."""
    params = {k: p.detach() for k, p in module.named_parameters()}
    tangents = {k: torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
                for k, p in params.items()}

    def loss_of(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_fn(lambda *args: functional_call(module, p, args))

    _, directional = jvp(loss_of, (params,), (tangents,))
    return {k: directional * v for k, v in tangents.items()}


def activity_perturbed_gradient(layer: torch.nn.Linear, x: torch.Tensor,
                                loss_of_output: Callable[[torch.Tensor], torch.Tensor],
                                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """FG-A for a linear layer whose output z = layer(x) [B, N] feeds a (local) loss: one JVP along a
    Gaussian direction over the outputs, then the exact within-layer chain rule to W and b."""
    with torch.no_grad():
        z = layer(x)
    u = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    _, directional = jvp(loss_of_output, (z,), (u,))
    g_z = directional * u
    return {"weight": g_z.T @ x, "bias": g_z.sum(0)}
