"""The networks of the CKA paper's layer-correspondence test (Kornblith et al. 2019, §6.1, Appendix E).

`TinyCNN` is one network of the paper's Tiny-10 layout; `GroupedTinyCNN` holds M of them as one network
whose layers are grouped convolutions (groups=M) and a batched final layer, so the M members train in one
forward and backward pass with no Python loop over members. Member m of the grouped network computes
exactly what `grouped.member(m)` computes on its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Tiny-10 (Table E.1): (width index into `channels`, kernel, stride, padding) of each conv-BN-ReLU layer.
TINY10 = ((0, 3, 1, 1), (0, 3, 1, 1),
          (1, 3, 2, 1), (1, 3, 1, 1), (1, 3, 1, 1),
          (2, 3, 2, 1), (2, 3, 1, 0), (2, 1, 1, 0))


def _convs(in_channels: int, channels: list[int], stem_stride: int,
           members: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The conv and batch-norm layers of `members` networks side by side (members=1: a single network)."""
    convs, norms, c = nn.ModuleList(), nn.ModuleList(), in_channels
    for i, (w, k, s, p) in enumerate(TINY10):
        out, s = channels[w], s if i else stem_stride
        # the first layer reads the shared image, so its M filter banks are one ordinary conv
        convs.append(nn.Conv2d(c * (members if i else 1), out * members, k, s, p, bias=False,
                               groups=members if i else 1))
        norms.append(nn.BatchNorm2d(out * members))
        c = out
    return convs, norms


class TinyCNN(nn.Module):
    """One Tiny-10 network: 3x3 conv c1 x2, 3x3 conv c2 stride 2, 3x3 conv c2 x2, 3x3 conv c3 stride 2,
    3x3 conv c3 valid, 1x1 conv c3 (each followed by batch norm and ReLU), global average pooling, logits.
    The paper's widths are (16, 32, 64) on CIFAR-10 and its first conv has stride 1; `stem_stride=2`
    halves the resolution from the first layer on (about a third of the compute), but on 28x28 images it leaves
    maps of 4 and 2 pixels from layer 6 on (cka-fmnist, trained with augmentation and a cosine decay: linear
    CKA then finds the seeds' corresponding layers 0.92 of the time, RBF CKA 0.99)."""

    def __init__(self, in_channels: int = 1, channels: list[int] = [16, 32, 64], num_classes: int = 10,
                 stem_stride: int = 1):
        super().__init__()
        self.convs, self.norms = _convs(in_channels, list(channels), stem_stride, 1)
        self.head = nn.Linear(channels[-1], num_classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The nine representations the paper compares: every conv layer after its ReLU, then the pooled
        features (the logits are excluded, as in Table 2)."""
        out = []
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
            out.append(x)
        out.append(x.mean((2, 3)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])


class BatchedLinear(nn.Module):
    """M independent linear layers applied at once: [B, M, in] -> [B, M, out]."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bmi,moi->bmo", x, self.weight) + self.bias


class GroupedTinyCNN(nn.Module):
    """M Tiny-10 networks as one: layer widths times M, grouped convolutions, a batched head.

    Member m starts from `torch.manual_seed(seeds[m]); TinyCNN(...)`, the network a user gets alone with
    that seed (the global random state is left untouched). The state dict has the member's keys: conv and
    batch-norm tensors are the members' concatenated along the channel dimension, the head's are stacked
    along a new first dimension.
    """

    def __init__(self, seeds: list[int] = list(range(10)), in_channels: int = 1, channels: list[int] = [16, 32, 64],
                 num_classes: int = 10, stem_stride: int = 1):
        super().__init__()
        self.members, self.shape = len(seeds), dict(in_channels=in_channels, channels=list(channels),
                                                    num_classes=num_classes, stem_stride=stem_stride)
        states = []
        with torch.random.fork_rng(devices=[]):
            self.convs, self.norms = _convs(in_channels, list(channels), stem_stride, self.members)
            self.head = BatchedLinear(self.members, channels[-1], num_classes)
            for seed in seeds:
                torch.manual_seed(seed)
                states.append(TinyCNN(**self.shape).state_dict())
        self.load_state_dict({k: self._join(k, [s[k] for s in states]) for k in states[0]})

    def member(self, m: int) -> TinyCNN:
        """A standalone copy of member m (weights and batch-norm statistics)."""
        net = TinyCNN(**self.shape).to(self.head.weight)  # same device and dtype
        net.load_state_dict({k: self._split(k, v, m) for k, v in self.state_dict().items()})
        return net

    @staticmethod
    def _join(key: str, values: list[torch.Tensor]) -> torch.Tensor:
        if key.startswith("head."):
            return torch.stack(values)
        if key.endswith("num_batches_tracked"):
            return values[0]
        return torch.cat(values)

    def _split(self, key: str, value: torch.Tensor, m: int) -> torch.Tensor:
        if key.startswith("head."):
            return value[m]
        if key.endswith("num_batches_tracked"):
            return value
        return value.chunk(self.members)[m]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's nine representations (see TinyCNN.features), as [B, M, ...] tensors."""
        out = []
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
            out.append(x.unflatten(1, (self.members, -1)))
        out.append(out[-1].mean((3, 4)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, [B, M, num_classes]."""
        return self.head(self.features(x)[-1])
