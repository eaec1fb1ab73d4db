"""`zoo convert` for the official Canonical Capsules checkpoints (a `torch.save` dict {iter_idx, model, optimizer},
read with `weights_only=True` by zoo._convert): every tensor of the official `AcneAe` state dict mapped onto
`CanonicalCapsulesModule`, or skipped by name with the reason.

Official names (aligner "init", ACNe "acn_b", batch norm "bn") -> ours:
- `aligner.encoder.*` -> `net.canonicaliser.encoder.*`, `encoder.*` -> `net.encoder.*`: residual block i is
  `layers.layer-i`, its layers `pass_through.layer` and `conv_layers.conv-j.layer`, each with `conv` (a 1x1 Conv2d:
  [out, in, 1, 1] -> Conv1d [out, in, 1]), `cn.conv` (ACN's attention, likewise) and `bn`;
- the capsule attention `aligner.encoder.layers.vote-<depth-1>.conv_att` -> `net.canonicaliser.encoder.head`;
- `aligner.ref_kp_net.layer.fc{1,2}` -> `net.canonicaliser.keypoints.fc{1,2}`;
- the K decoders `decoder.decoder.k.conv{1..4}` / `bn{1..3}` -> the grouped `net.decoder.layers.*` / `norms.*` /
  `out` (capsule k's channels at rows k·out ... (k+1)·out − 1; their batch counters are equal, capsule 0's is kept);
  `decoder.grid` [1, K, M, g] -> `net.decoder.grid` [K, g, M].
Skipped: the aligner's decoder (`aligner.decoder.*`: built by the official code, never used), the main encoder's
attention head (`encoder.layers.vote-*`: the main encoder pools with the aligner's attention), `optimizer.*` and
`iter_idx` (training state).
"""
from __future__ import annotations

import numpy as np

from zoo._convert import StateBuilder, register_converter

SKIP = ("optimizer.*", "iter_idx", "model.aligner.decoder.*", "model.encoder.layers.vote-*")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _squeeze(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], 1) if a.ndim == 4 else a


def _acn_layer(b: StateBuilder, src: str, dst: str) -> None:
    for official, ours in (("conv", "conv"), ("cn.conv", "cn.attention")):
        b.take(f"{src}.{official}.weight", f"{dst}.{ours}.weight", _squeeze)
        b.take(f"{src}.{official}.bias", f"{dst}.{ours}.bias")
    for k in BN:
        b.take(f"{src}.bn.{k}", f"{dst}.bn.{k}")


def _encoder(b: StateBuilder, src: str, dst: str, depth: int, inner: int, head: bool, with_pass: int) -> None:
    for i in range(depth):
        if i < with_pass:
            _acn_layer(b, f"{src}.layers.layer-{i}.pass_through.layer", f"{dst}.blocks.{i}.pass_through")
        for j in range(inner):
            _acn_layer(b, f"{src}.layers.layer-{i}.conv_layers.conv-{j}.layer", f"{dst}.blocks.{i}.layers.{j}")
    if head:
        b.take(f"{src}.layers.vote-{depth - 1}.conv_att.weight", f"{dst}.head.weight", _squeeze)
        b.take(f"{src}.layers.vote-{depth - 1}.conv_att.bias", f"{dst}.head.bias")


def _concat(b: StateBuilder, srcs: list[str], dst: str, keep_first: bool = False) -> None:
    missing = [s for s in srcs if s not in b.variables]
    if missing:
        b.absent += [f"{s} (for {dst})" for s in missing]
        return
    b.used.update(srcs)
    arrays = [np.asarray(b.variables[s]) for s in srcs]
    b.state[dst] = arrays[0] if keep_first else np.ascontiguousarray(np.concatenate(arrays, 0))


@register_converter("canonical_capsules")
def convert_canonical_capsules(b: StateBuilder, module) -> None:
    hp = module.hparams
    b.skip = (*b.skip, *SKIP)
    net = module.net
    depth = len(net.encoder.blocks)
    inner = len(net.encoder.blocks[0].layers)
    with_pass = sum(blk.pass_through is not None for blk in net.encoder.blocks)
    _encoder(b, "model.aligner.encoder", "net.canonicaliser.encoder", depth, inner, True, with_pass)
    _encoder(b, "model.encoder", "net.encoder", depth, inner, False, with_pass)
    for fc in ("fc1", "fc2"):
        for k in ("weight", "bias"):
            b.take(f"model.aligner.ref_kp_net.layer.{fc}.{k}", f"net.canonicaliser.keypoints.{fc}.{k}")
    b.take("model.decoder.grid", "net.decoder.grid", lambda g: g[0].transpose(0, 2, 1))
    K = hp.K
    dec = "model.decoder.decoder"
    for layer in range(3):
        for k in ("weight", "bias"):
            _concat(b, [f"{dec}.{c}.conv{layer + 1}.{k}" for c in range(K)], f"net.decoder.layers.{layer}.{k}")
        for k in BN:
            _concat(b, [f"{dec}.{c}.bn{layer + 1}.{k}" for c in range(K)], f"net.decoder.norms.{layer}.{k}",
                    keep_first=k == "num_batches_tracked")
    for k in ("weight", "bias"):
        _concat(b, [f"{dec}.{c}.conv4.{k}" for c in range(K)], f"net.decoder.out.{k}")
