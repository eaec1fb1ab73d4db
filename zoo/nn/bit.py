"""Big Transfer's ResNet (Kolesnikov et al. 2020, "BiT"), the backbone REMEDIS starts from: a pre-activation
ResNet-v2 whose every batch norm is a group norm (32 groups) and whose every convolution is weight-standardised
(each filter scaled to zero mean and unit variance before it is applied), so it trains the same at any batch size,
which is what lets the supervised upstream, the contrastive stage and few-label fine-tuning share one network.

Built on timm's `ResNetV2` with BiT's settings (`resnetv2_50x1_bit`: the 7x7 stride-2 stem with BiT's fixed
one-pixel padding before its max-pool, `StdConv2d` with ε = 1e-8), never with downloaded weights. Two options
scale it down for CPUs, both at the paper's values by default:
- `width` multiplies every width, stem included (timm's integer `width_factor` is the paper's x1, x2, x3);
- `groups` below 32 lets narrow networks keep whole groups (BiT: 32).
"""
from __future__ import annotations

from functools import partial

from torch import nn

__all__ = ["BIT_DEPTHS", "bit_encoder"]

#: bottleneck blocks per stage of BiT's ResNet-v2 depths (26: two a stage, for small-scale recipes)
BIT_DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def bit_encoder(depth: int = 50, width: float = 1.0, in_chans: int = 3, groups: int = 32) -> nn.Module:
    """BiT-R`depth`x`width` without its classifier: images [B, C, H, W] -> h [B, num_features], the global
    average of the last stage after the final group norm and ReLU (pre-activation networks end with them).

    depth 26 is four stages of two bottlenecks, not a BiT release: the small-scale recipes' network. Widths must
    split into `groups` (GroupNorm's condition): an error says which layer does not.
    """
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    if depth not in BIT_DEPTHS:
        raise ValueError(f"depth={depth}: BiT's ResNet-v2 comes in depths {sorted(BIT_DEPTHS)}")
    if width <= 0:
        raise ValueError(f"width={width}: need > 0")
    channels = tuple(round(c * width) for c in (256, 512, 1024, 2048))
    stem = round(64 * width)
    mids = tuple(c // 4 for c in channels)
    for name, c in [("stem", stem), *zip(("stage 1", "stage 2", "stage 3", "stage 4"), mids), ("output", channels[-1])]:
        if c % groups:
            raise ValueError(f"width={width}: the {name} has {c} channels, which {groups} groups do not split; "
                             "choose a width or groups that divide it")
    conv = partial(StdConv2d, eps=1e-8)
    net = ResNetV2(list(BIT_DEPTHS[depth]), channels=channels, num_classes=0, in_chans=in_chans, stem_chs=stem,
                   stem_type="fixed", conv_layer=conv, norm_layer=partial(GroupNormAct, num_groups=groups))
    net.num_features = channels[-1]
    return net
