"""The official Pix2seq checkpoints (google-research/pix2seq, TF2 object-based) -> `Pix2SeqDetector` weights.

Variable names are those the official code's attribute names give, as a checkpoint saved from its
`encoder_ar_decoder` model lists them (`model/encoder/transformer_encoder/enc_layers/0/mha/_query_dense/kernel`);
the ResNet is the official one (`block_groups/G/layers/L/conv_relu_dropblock_layers/{0,1,3,4,6,7}` = conv/BN of the
three bottleneck convolutions, `projection_layers/{0,1}` the shortcut, `initial_conv_relu_max_pool/{0,2}` the stem);
the ViT's patch convolution is `model/encoder/stem_conv`.
Optimizer slots and step counters are skipped; everything else must map (zoo._convert.StateBuilder). A Pix2seq v2
model's caption tokenizer is not in the checkpoint: it is the tokenizer `zoo convert` set into the model (the
source's SentencePiece file), filled as it is.
"""
from __future__ import annotations

from zoo._convert import StateBuilder, register_converter
from zoo._errors import ConversionError


def _mlp(b: StateBuilder, src: str, dst: str) -> None:
    """The official one-layer MLP block: layernorms/0 then mlp_layers/0/{dense1, dense2}."""
    b.layer_norm(f"{src}/layernorms/0", f"{dst}.ln")
    b.dense(f"{src}/mlp_layers/0/dense1", f"{dst}.fc1")
    b.dense(f"{src}/mlp_layers/0/dense2", f"{dst}.fc2")


def _resnet(b: StateBuilder, backbone, src: str, dst: str) -> None:
    b.conv2d(f"{src}/initial_conv_relu_max_pool/0/conv2d", f"{dst}.conv1")
    b.batch_norm(f"{src}/initial_conv_relu_max_pool/2/bn", f"{dst}.bn1")
    groups = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(backbone, n)]  # resnet-c: to layer3
    for g, name in enumerate(groups):
        for i, block in enumerate(getattr(backbone, name)):
            s, d = f"{src}/block_groups/{g}/layers/{i}", f"{dst}.{name}.{i}"
            for j, (conv, bn) in enumerate(((0, 1), (3, 4), (6, 7))):
                b.conv2d(f"{s}/conv_relu_dropblock_layers/{conv}/conv2d", f"{d}.conv{j + 1}")
                b.batch_norm(f"{s}/conv_relu_dropblock_layers/{bn}/bn", f"{d}.bn{j + 1}")
            if block.downsample is not None:
                b.conv2d(f"{s}/projection_layers/0/conv2d", f"{d}.downsample.0")
                b.batch_norm(f"{s}/projection_layers/1/bn", f"{d}.downsample.1")


@register_converter("pix2seq")
def convert_pix2seq(b: StateBuilder, module) -> None:
    """Map an official Pix2seq detector: the `resnet` / `resnet-c` variants (ResNet-50, whole or to its third stage
    as `feature_stage: 3`, + transformer encoder) or the `vit-b` / `vit-l` ones (patch convolution + transformer
    encoder), each with its autoregressive decoder."""
    net, p = module.model, "model."
    vit = "model/encoder/stem_conv/kernel" in b.variables
    if vit != (net.backbone is None):
        have = "a ViT encoder (model/encoder/stem_conv)" if vit else "a ResNet encoder (model/encoder/resnet)"
        want = "backbone: vit" if vit else "a ResNet backbone"
        raise ConversionError(f"this checkpoint has {have}, but the entry's model is built with the other "
                              f"encoder; convert it into a Pix2SeqDetector with {want}")
    if vit:
        b.conv2d("model/encoder/stem_conv", f"{p}stem_conv", bias=True)
    elif not any(k.startswith("model/encoder/resnet/") for k in b.variables):
        found = sorted({k.split("/")[2] for k in b.variables if k.startswith("model/encoder/")})
        raise ConversionError(f"this checkpoint's encoder is neither the official ResNet nor its ViT (encoder "
                              f"parts: {', '.join(found) or 'none'}); it is not an official Pix2seq detector")
    else:
        _resnet(b, net.backbone, "model/encoder/resnet", f"{p}backbone")
        b.dense("model/encoder/stem_projection", f"{p}stem_projection")
    b.layer_norm("model/encoder/stem_ln", f"{p}stem_ln")
    for i in range(len(net.encoder)):
        s, d = f"model/encoder/transformer_encoder/enc_layers/{i}", f"{p}encoder.{i}"
        b.layer_norm(f"{s}/mha_ln", f"{d}.ln")
        b.mha(f"{s}/mha", *(f"{d}.attn.{n}" for n in ("query", "key", "value", "out")))
        _mlp(b, f"{s}/mlp", f"{d}.mlp")
    b.layer_norm("model/encoder/output_ln", f"{p}encoder_ln")
    b.dense("model/proj", f"{p}proj")
    b.layer_norm("model/proj_ln", f"{p}proj_ln")
    _mlp(b, "model/proj_mlp", f"{p}proj_mlp")
    for name, dst in (("token_embedding", "token_embedding"), ("seq_pos_embedding", "seq_pos_embedding"),
                      ("outp_bias", "output_bias")):
        b.take(f"model/decoder/ar_decoder.S{name}", f"{p}{dst}")  # add_weight("ar_decoder/NAME"): "/" -> ".S"
    for i in range(len(net.decoder)):
        s, d = f"model/decoder/decoder/dec_layers/{i}", f"{p}decoder.{i}"
        for kind in ("self", "cross"):
            b.layer_norm(f"{s}/{kind}_ln", f"{d}.{kind}_ln")
            b.mha(f"{s}/{kind}_mha", *(f"{d}.{kind}_attn.{n}" for n in ("query", "key", "value", "out")))
        _mlp(b, f"{s}/mlp", f"{d}.mlp")
    b.layer_norm("model/decoder/output_ln", f"{p}decoder_ln")
    if "caption_tokenizer" in module.state_dict():
        b.fill("caption_tokenizer", module.caption_tokenizer.cpu().numpy())
