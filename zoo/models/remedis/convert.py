"""BiT's released weights (Kolesnikov et al. 2020; google-research/big_transfer, `BiT-{S,M}-R{depth}x{width}.npz`)
-> a REMEDIS network, the upstream its recipe starts from.

The files are NumPy archives of the official TF variables under `resnet/`: `root_block/standardized_conv2d/kernel`
(the stem), for stage s and unit u `block{s}/unit{u:02d}/{a,b,c}/standardized_conv2d/kernel` with the group norm that
comes before each convolution (`{a,b,c}/group_norm/{gamma,beta}`, pre-activation), the first unit's projection
`a/proj/standardized_conv2d/kernel`, the final `group_norm/{gamma,beta}` and the classifier, a 1x1 convolution
`head/conv2d/{kernel,bias}` (BiT-S: 1,000 ImageNet classes; BiT-M: 21,843 ImageNet-21k classes). Kernels are HWIO
([kh, kw, in, out]) and become OIHW. Weight standardisation happens in the layer (timm's `StdConv2d`), so the
kernels are copied as stored. Nothing is skipped: the files hold weights only.
"""
from __future__ import annotations

import numpy as np

from zoo._convert import StateBuilder, register_converter


def _oihw(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)


@register_converter("bit")
def convert_bit(b: StateBuilder, module) -> None:
    """Map a BiT .npz onto a REMEDIS module's encoder f (`zoo.nn.bit`, timm's ResNetV2 layout) and classifier."""
    f = module.net.f
    b.take("resnet/root_block/standardized_conv2d/kernel", "net.f.stem.conv.weight", _oihw)
    for s, stage in enumerate(f.stages):
        for u, block in enumerate(stage.blocks):
            src, dst = f"resnet/block{s + 1}/unit{u + 1:02d}", f"net.f.stages.{s}.blocks.{u}"
            for part, n in (("a", 1), ("b", 2), ("c", 3)):
                b.take(f"{src}/{part}/group_norm/gamma", f"{dst}.norm{n}.weight")
                b.take(f"{src}/{part}/group_norm/beta", f"{dst}.norm{n}.bias")
                b.take(f"{src}/{part}/standardized_conv2d/kernel", f"{dst}.conv{n}.weight", _oihw)
            if block.downsample is not None:
                b.take(f"{src}/a/proj/standardized_conv2d/kernel", f"{dst}.downsample.conv.weight", _oihw)
    b.take("resnet/group_norm/gamma", "net.f.norm.weight")
    b.take("resnet/group_norm/beta", "net.f.norm.bias")
    b.take("resnet/head/conv2d/kernel", "net.classifier.weight", lambda k: k.reshape(k.shape[-2:]).T)
    b.take("resnet/head/conv2d/bias", "net.classifier.bias")
