"""The official SimCLR checkpoints (google-research/simclr, TF1 name-based) -> zoo SimCLR networks.

The TF1 code names layers by creation order inside each variable scope: `base_model/conv2d`, `conv2d_1`, ... and
`base_model/batch_normalization`, `batch_normalization_1`, ..., counted separately. `_official_order` walks the zoo
encoder in the order the official `resnet.py` creates its layers (stem; then per block the projection shortcut's
conv and batch norm, the block's convolutions each with its batch norm, the selective kernel's three convolutions
and two batch norms), so each zoo layer gets its official name. The heads are `head_contrastive/nl_J` (SimCLRv2's
3 layers, SimCLR v1's training had 2; v1 checkpoints hold none: "the projection head is not available") or
`l_0` for a linear head, and `head_supervised/linear_layer/dense`, the linear classifier on the encoder output
(pre-trained checkpoints: linear evaluation) or on the kept head layers (fine-tuned checkpoints).

Skipped, by name: optimizer slots (`*/Momentum`, `*/LARSOptimizer`), the step, and the `ema_model/` copy some
checkpoints carry: the official fine-tuning restores `base_model/` and `head_*/` (its `variable_schema`), not
the moving average, so the zoo does too. A fine-tuned checkpoint holds the whole projection head ("for checkpoint
compatibility"); the layers above the kept ones (`ft_proj_selector`) are skipped as the official network ignores
them. Everything else must map (zoo._convert.StateBuilder).
"""
from __future__ import annotations

import re

import numpy as np
from torch import nn

from zoo._convert import StateBuilder, register_converter
from zoo._errors import ConversionError
from zoo.nn.resnet import ScaleOnlyBatchNorm, SelectiveKernelConv

SKIP = ("*/Momentum", "*/LARSOptimizer", "ema_model/*")


def _official_order(f: nn.Module) -> list[tuple[str, str]]:
    """(kind, zoo module path) of every conv ("conv") and batch norm ("bn") of encoder f, in the official
    creation order."""
    order: list[tuple[str, str]] = []

    def seq(path: str, module: nn.Module) -> None:
        for name, m in module.named_modules():
            if isinstance(m, nn.Conv2d):
                order.append(("conv", f"{path}.{name}" if name else path))
            elif isinstance(m, nn.BatchNorm2d):
                order.append(("bn", f"{path}.{name}" if name else path))

    seq("conv1", f.conv1)  # one 7x7 conv, or the deep stem's conv-bn-relu-conv-bn-relu-conv
    seq("bn1", f.bn1)
    for s in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(f, s)):
            path = f"{s}.{i}"
            if block.downsample is not None:
                seq(f"{path}.downsample", block.downsample)  # [pool,] conv, bn: the shortcut comes first
            convs = ("1", "2", "3") if hasattr(block, "conv3") else ("1", "2")
            for c in convs:
                conv = getattr(block, f"conv{c}")
                if isinstance(conv, SelectiveKernelConv):
                    for part in ("conv", "bn", "fc1", "bn_fc1", "fc2"):
                        seq(f"{path}.conv{c}.{part}", getattr(conv, part))
                else:
                    seq(f"{path}.conv{c}", conv)
                    seq(f"{path}.bn{c}", getattr(block, f"bn{c}"))
    return order


def _tf1(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


def _encoder(b: StateBuilder, f: nn.Module, dst: str) -> None:
    counts = {"conv": 0, "bn": 0}
    for kind, path in _official_order(f):
        name = _tf1("conv2d" if kind == "conv" else "batch_normalization", counts[kind])
        counts[kind] += 1
        (b.conv2d if kind == "conv" else b.batch_norm)(f"base_model/{name}", f"{dst}.{path}")
    extra = sorted({k.split("/")[1] for k in b.variables if k.startswith("base_model/")}
                   - {_tf1("conv2d", i) for i in range(counts["conv"])}
                   - {_tf1("batch_normalization", i) for i in range(counts["bn"])})
    if extra:
        raise ConversionError(f"the checkpoint's encoder has layers this one lacks ({', '.join(extra[:4])}"
                              f"{' ...' if len(extra) > 4 else ''}): is it deeper or selective-kernel (sk1)? Set "
                              f"depth and sk_ratio as its name says (r152_3x_sk1: depth 152, width 3, sk_ratio "
                              f"0.0625)")


def _head_layer(b: StateBuilder, src: str, g: nn.Sequential, i: int, dst: str) -> None:
    """Official linear_layer `src` (dense without bias, then batch norm) -> g[i] (Linear), g[i + 1] (its norm)."""
    b.take(f"{src}/dense/kernel", f"{dst}.{i}.weight", lambda k: k.T)
    s, bn = f"{src}/batch_normalization", f"{dst}.{i + 1}"
    if isinstance(g[i + 1], ScaleOnlyBatchNorm):  # the last layer's batch norm scales, without a shift
        b.take(f"{s}/gamma", f"{bn}.weight_scale")
    else:
        b.take(f"{s}/gamma", f"{bn}.weight")
        b.take(f"{s}/beta", f"{bn}.bias")
    b.take(f"{s}/moving_mean", f"{bn}.running_mean")
    b.take(f"{s}/moving_variance", f"{bn}.running_var")
    b.fill(f"{bn}.num_batches_tracked", np.zeros((), np.int64))


def _projection_head(b: StateBuilder, g: nn.Sequential, dst: str) -> None:
    """The kept layers of g from head_contrastive; the checkpoint's further layers are skipped."""
    layers = [i for i, m in enumerate(g) if isinstance(m, nn.Linear)]
    in_ckpt = sorted({m[1] for k in b.variables if (m := re.match(r"head_contrastive/(n?l_\d+)/", k))})
    names = ["l_0"] if in_ckpt == ["l_0"] else [f"nl_{j}" for j in range(len(layers))]
    if layers and not in_ckpt:
        raise ConversionError("the checkpoint holds no projection head (SimCLR v1 checkpoints do not): convert "
                              "it into a model without one (head: none)")
    for name, i in zip(names, layers):
        _head_layer(b, f"head_contrastive/{name}", g, i, dst)
    b.skip += tuple(f"head_contrastive/{n}/*" for n in in_ckpt if n not in names[:len(layers)])


@register_converter("simclr")
def convert_simclr(b: StateBuilder, module) -> None:
    """Map an official SimCLR / SimCLRv2 checkpoint (ResNet-50/101/152 at any width, with or without selective
    kernels) onto a zoo `SimCLR` (encoder, projection head, linear-evaluation probe on h) or a fine-tuned
    SimCLRv2 network (encoder, kept head layers, classifier)."""
    b.skip += SKIP
    net = module.net
    _encoder(b, net.f, "net.f")
    _projection_head(b, net.g.net, "net.g.net")
    classifier = "probe" if hasattr(module, "probe") else "net.classifier"
    b.dense("head_supervised/linear_layer/dense", classifier)
