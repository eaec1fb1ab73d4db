"""NASA: Neural Articulated Shape Approximation (Deng et al. 2020, arXiv 1912.03207), as the official TF1 code
(tensorflow/graphics, projects/nasa) builds it.

A posed body is given by its parts' bone-from-world transforms B_k⁻¹ (4 x 4; a posed point to part k's rest frame).
Each part k has its own small occupancy network o_k, evaluated on the query point in that part's frame:

- rigid (R): o_k(B_k⁻¹ x), so each part moves rigidly with its bone;
- deformable (D): o_k(B_k⁻¹ x, Π_k θ), where the pose code θ is the root joint's position expressed in every part's
  frame (3K numbers) and Π is one shared bias-free linear map to 4 numbers per part (the official `dim_reduction`),
  appended after the point; so a part's shape may change with the pose, as skin bends near a joint.

o_k is a 5-layer MLP of width ceil(960 / K) (leaky ReLU 0.1, residual connections around the three middle layers, a
sigmoid on the output). The parts are blended by a softmax over their occupancies, O = Σ_k softmax(α o)_k o_k with
α = 5 (a hard max for α < 0). The unstructured variant U of the paper is not in the official code and is not built
here. All K parts are evaluated as batched products (the official code loops over them).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class PartMLPs(nn.Module):
    """K independent MLPs in -> d -> d -> d -> d -> 1 held as batched weights, applied to [K, M, in]: layer 0 leaky
    ReLU (0.1), layers 1-3 leaky ReLU of (dense + input), the last linear. Glorot-uniform weights and zero biases,
    TensorFlow's dense-layer defaults."""

    def __init__(self, parts: int, in_features: int, width: int, slope: float = 0.1):
        super().__init__()
        sizes = [in_features, width, width, width, width, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(sizes[:-1], sizes[1:]):
            bound = math.sqrt(6.0 / (a + b))
            self.weights.append(nn.Parameter(torch.empty(parts, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(parts, 1, b)))
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W, b = self.weights, self.biases
        # in place on fresh products: these tensors are large (parts x points x width), so every pass over memory
        # counts; autograd keeps the leaky ReLU's output, which is all its backward needs
        h = F.leaky_relu_(torch.baddbmm(b[0], x, W[0]), self.slope)
        for i in (1, 2, 3):
            z = torch.baddbmm(b[i], h, W[i])
            z += h
            h = F.leaky_relu_(z, self.slope)
        return torch.baddbmm(b[4], h, W[4])


class NASAOutput(NamedTuple):
    O: torch.Tensor      # [B, N] the blended occupancy
    parts: torch.Tensor  # [B, K, N] each part's occupancy o_k


def to_part_frames(points: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """points [B, N, 3] in every part's frame: [B, K, N, 3] = (B_k⁻¹ [x; 1])[:3] (no division by w, as the
    official code)."""
    return torch.einsum("bkij,bnj->bkni", transforms[..., :3, :3], points) + transforms[:, :, None, :3, 3]


def blend(parts: torch.Tensor, alpha: float) -> torch.Tensor:
    """O [B, N] from part occupancies [B, K, N]: Σ_k softmax(α o)_k o_k, or the max for α < 0."""
    if alpha < 0:
        return parts.amax(1)
    return (torch.softmax(alpha * parts, 1) * parts).sum(1)


class NASA(nn.Module):
    """Args:
        parts: K.
        deformable: D (with the pose code) or R (without).
        total_width: the official `total_dim`; each part's width is ceil(total_width / K).
        code: pose-code numbers per part (official: 4).
        soft_blend: α of the blending softmax (official: 5; negative: hard max).
    """

    def __init__(self, parts: int = 24, deformable: bool = True, total_width: int = 960, code: int = 4,
                 soft_blend: float = 5.0):
        super().__init__()
        self.K, self.deformable, self.soft_blend = parts, deformable, soft_blend
        self.width = math.ceil(total_width / parts)
        if deformable:
            self.project = nn.Linear(3 * parts, code * parts, bias=False)
            bound = math.sqrt(6.0 / (3 * parts + code * parts))
            nn.init.uniform_(self.project.weight, -bound, bound)
        self.mlps = PartMLPs(parts, 3 + (code if deformable else 0), self.width)

    def pose_code(self, transforms: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
        """Π θ [B, K, code]: the root joint in every part's frame [B, 3K] through the shared linear map."""
        theta = to_part_frames(root[:, None], transforms)[:, :, 0].flatten(1)
        return self.project(theta).view(len(root), self.K, -1)

    def forward(self, points: torch.Tensor, transforms: torch.Tensor, root: torch.Tensor) -> NASAOutput:
        """points [B, N, 3] (posed), transforms [B, K, 4, 4] (bone-from-world), root [B, 3] -> NASAOutput."""
        B, N = points.shape[:2]
        if transforms.shape[-3:] != (self.K, 4, 4):
            raise ValueError(f"the pose holds {tuple(transforms.shape[1:])} bone transforms, but this NASA model has "
                             f"{self.K} parts (one 4 x 4 transform each): the data's skeleton is not the one the "
                             f"model was built for; build it with parts={transforms.shape[-3]} or map the bones")
        # parts first ([K, B, N, 3]), the layout the batched part networks read, so nothing is transposed
        x = torch.einsum("bkij,bnj->kbni", transforms[..., :3, :3], points) + transforms[:, :, :3, 3].transpose(
            0, 1)[:, :, None]
        if self.deformable:
            code = self.pose_code(transforms, root).transpose(0, 1)  # [K, B, code]
            x = torch.cat([x, code[:, :, None].expand(-1, -1, N, -1)], -1)
        # K x 1,024 rows at a time: the activations of a block stay in cache (about 1.3x the whole batch at once)
        h = torch.cat([self.mlps(c) for c in x.reshape(self.K, B * N, -1).split(1024, 1)], 1)  # [K, B·N, 1]
        parts = torch.sigmoid(h.view(self.K, B, N).transpose(0, 1))
        return NASAOutput(blend(parts, self.soft_blend), parts)


class NASALosses(NamedTuple):
    total: torch.Tensor
    occupancy: torch.Tensor
    label: torch.Tensor
    minimal: torch.Tensor


def nasa_losses(out: NASAOutput, labels: torch.Tensor, vertex_parts_out: torch.Tensor, vertex_parts: torch.Tensor,
                n_box: int, w_label: float = 0.5, w_minimal: float = 0.05, level_set: float = 0.5) -> NASALosses:
    """The official objective: occupancy MSE of O on every training point; the label loss, MSE of every part's
    occupancy at posed mesh vertices [B, K, V] against level_set x one-hot of the vertex's main part (weight 0.5);
    the minimal loss, the mean squared part occupancy at the box points (the first n_box), weight 0.05."""
    occupancy = (out.O - labels).square().mean()
    target = level_set * F.one_hot(vertex_parts, out.parts.shape[1]).transpose(1, 2).to(vertex_parts_out.dtype)
    label = (vertex_parts_out - target).square().mean()
    minimal = out.parts[..., :n_box].square().mean()
    return NASALosses(occupancy + w_label * label + w_minimal * minimal, occupancy, label, minimal)
