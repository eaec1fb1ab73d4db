"""Pix2seq (Chen, Saxena, Li, Fleet, Hinton; ICLR 2022, arXiv 2109.10852): an image encoder and a causal
transformer decoder that reads out objects as tokens (tokenizer.py).

The "resnet" architecture of the official code (google-research/pix2seq `configs/config_base.py`,
`architectures/transformers.py`, `models/ar_model.py`):
- encoder: a ResNet-50 (timm, its stem max-pool padded as TF's "SAME" pads) to stride 32; its feature map
  flattened row by row, dropout, a linear projection to d = 256 and LayerNorm, plus fixed 2-D sine-cosine positions
  (first half of the channels code the row, second half the column, coordinates scaled to [0, 2 pi]); 6 pre-LN
  transformer layers (8 heads, MLP 1024, GELU); LayerNorm;
- encoder -> decoder: linear to the decoder width, LayerNorm, the decoder width's 2-D sine-cosine positions, then one
  pre-LN MLP block;
- decoder: 6 pre-LN layers of causal self-attention, cross-attention to the encoded image and an MLP (d 256, 8 heads,
  MLP 1024), learned positions, a final LayerNorm, and logits from the token embedding shared with the input
  (plus an output bias). Stochastic depth (drop_path 0.1) and dropout 0.1 on every residual branch's MLP.
The "vit-b" / "vit-l" variants replace the ResNet, its dropout and projection by a 16 x 16 patch convolution
(with bias) followed by the same LayerNorm, positions and encoder (vit-b: 12 layers 768 wide, 12 heads, MLP 3072;
decoder 6 layers 512 wide, 16 heads, MLP 2048).
All LayerNorms have eps 1e-6; embeddings, positions and the output bias start from N(0, 0.02²) truncated at ±2 std.

Decoding keeps a key/value cache: each step projects only the new token's keys and values, and the image's
cross-attention keys and values are projected once per image (the official code recomputes them from cached
normalised inputs; the outputs are the same).
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from timm.layers import create_pool2d
from torch import nn

from zoo.models.pix2seq.tokenizer import sample_token

LN_EPS = 1e-6


def sincos(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """The official positional_encoding: angle_i = pos / 10000^(2 floor(i/2) / dim), then [sin of the even-i
    angles, cos of the odd-i angles] -> [len(coords), dim]."""
    i = torch.arange(dim, device=coords.device)
    angles = coords[:, None].float() / torch.pow(10000.0, (2 * (i // 2)).float() / dim)
    return torch.cat([angles[:, 0::2].sin(), angles[:, 1::2].cos()], -1)


def sincos_2d(rows: int, cols: int, dim: int, device=None) -> torch.Tensor:
    """[rows x cols, dim] codes of a row-major grid: row code in the first dim/2 channels, column code in the rest;
    coordinates scaled to [0, 2 pi] (a 1-D code when the grid is one row or column)."""
    if rows == 1 or cols == 1:
        n = rows * cols
        return sincos(torch.arange(n, device=device) / max(n - 1, 1) * 2 * math.pi, dim)
    y = sincos(torch.arange(rows, device=device) / (rows - 1) * 2 * math.pi, dim // 2)
    x = sincos(torch.arange(cols, device=device) / (cols - 1) * 2 * math.pi, dim // 2)
    return torch.cat([y[:, None].expand(-1, cols, -1), x[None].expand(rows, -1, -1)], -1).reshape(rows * cols, dim)


def _trunc_normal(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(shape), std=0.02, a=-0.04, b=0.04))


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch per example with probability p, scale the rest by 1/(1-p)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], *[1] * (x.dim() - 1), device=x.device, dtype=x.dtype) < 1 - self.p
        return x * keep / (1 - self.p)


class Attention(nn.Module):
    """Multi-head attention with biased query/key/value/output projections (Keras MultiHeadAttention)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, heads, S, head_dim]

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.key(x)), self.split(self.value(x))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Queries from x [B, T, d] over keys/values [B, heads, S, head_dim]; mask [T, S] True where allowed."""
        out = F.scaled_dot_product_attention(self.split(self.query(x)), k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, *self.keys_values(memory), mask)


class MLPBlock(nn.Module):
    """x + DropPath(Linear(Dropout(GELU(Linear(LN(x)))))) (the official MLP with one layer)."""

    def __init__(self, dim: int, hidden: int, drop_path: float, drop_units: float):
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=LN_EPS)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout, self.drop_path = nn.Dropout(drop_units), DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fc2(self.dropout(F.gelu(self.fc1(self.ln(x))))))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, drop_path: float, drop_units: float, drop_att: float):
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, drop_att)
        self.drop_path = DropPath(drop_path)
        self.mlp = MLPBlock(dim, hidden, drop_path, drop_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(x)
        return self.mlp(x + self.drop_path(self.attn(h, h)))


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, drop_path: float, drop_units: float, drop_att: float):
        super().__init__()
        self.self_ln, self.cross_ln = nn.LayerNorm(dim, eps=LN_EPS), nn.LayerNorm(dim, eps=LN_EPS)
        self.self_attn, self.cross_attn = Attention(dim, heads, drop_att), Attention(dim, heads, drop_att)
        self.drop_path = DropPath(drop_path)
        self.mlp = MLPBlock(dim, hidden, drop_path, drop_units)

    def forward(self, x: torch.Tensor, self_kv: tuple[torch.Tensor, torch.Tensor],
                cross_kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop_path(self.self_attn.attend(self.self_ln(x), *self_kv, mask))
        x = x + self.drop_path(self.cross_attn.attend(self.cross_ln(x), *cross_kv))
        return self.mlp(x)


def backbone_features(backbone: str, stages: tuple[int, ...]) -> nn.Module:
    """A timm CNN returning the maps of `stages` (1: stride 4 ... 4: stride 32; the stages after the last are not
    built), its stem max-pool padded as TF's "SAME" pads (windows from the first pixel, padding only at the end), as
    the official ResNet pools."""
    net = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=tuple(stages))
    pool = getattr(net, "maxpool", None)
    if isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1):
        net.maxpool = create_pool2d("max", 3, stride=2, padding="same")
    return net


class Pix2Seq(nn.Module):
    """Image encoder + autoregressive token decoder.

    Args:
        backbone: a timm CNN name ("resnet50" in the paper; the map of `feature_stage` is encoded), or "vit": the
            official ViT encoder, whose tokens are `patch_size` x `patch_size` patches projected by a convolution.
        num_encoder_layers, dim_att, dim_mlp, num_heads: the encoder transformer (resnet: 6, 256, 1024, 8).
        num_decoder_layers, dim_att_dec, dim_mlp_dec, num_heads_dec: the decoder (resnet: 6, 256, 1024, 8).
        vocab_size, max_seq_len: tokens and positions of the decoder (3000 and 512 in the released configs).
        drop_path, drop_units, drop_att: stochastic depth, MLP/feature dropout, attention dropout (0.1, 0.1, 0).
        feature_stage: the backbone stage whose map is encoded: 4 (stride 32, the official "resnet") or 3 (stride
            16, as the official "resnet-c" takes the ResNet to its third stage); the stages after it are not built.
        patch_size: the ViT's patch side (16 in the released vit-b and vit-l).
    """

    def __init__(self, backbone: str = "resnet50", num_encoder_layers: int = 6, dim_att: int = 256,
                 dim_mlp: int = 1024, num_heads: int = 8, num_decoder_layers: int = 6, dim_att_dec: int = 256,
                 dim_mlp_dec: int = 1024, num_heads_dec: int = 8, vocab_size: int = 3000, max_seq_len: int = 512,
                 drop_path: float = 0.1, drop_units: float = 0.1, drop_att: float = 0.0, feature_stage: int = 4,
                 patch_size: int = 16):
        super().__init__()
        if feature_stage not in (3, 4):
            raise ValueError(f"feature_stage must be 4 (the last stage, stride 32: the 'resnet' variant) or 3 (stride "
                             f"16: the 'resnet-c' variant), got {feature_stage}")
        if backbone == "vit":  # the official VisionTransformer: a patch convolution, then the encoder
            self.backbone, self.stem_conv = None, nn.Conv2d(3, dim_att, patch_size, stride=patch_size)
        else:
            self.backbone = backbone_features(backbone, (feature_stage,))
            self.feature_dropout = nn.Dropout(drop_units)
            self.stem_projection = nn.Linear(self.backbone.feature_info.channels()[-1], dim_att)
        self.stem_ln = nn.LayerNorm(dim_att, eps=LN_EPS)
        self.encoder = nn.ModuleList(EncoderLayer(dim_att, num_heads, dim_mlp, drop_path, drop_units, drop_att)
                                     for _ in range(num_encoder_layers))
        self.encoder_ln = nn.LayerNorm(dim_att, eps=LN_EPS)
        self.proj = nn.Linear(dim_att, dim_att_dec)
        self.proj_ln = nn.LayerNorm(dim_att_dec, eps=LN_EPS)
        self.proj_mlp = MLPBlock(dim_att_dec, dim_att_dec * (dim_mlp // dim_att), drop_path, drop_units)
        self.token_embedding = _trunc_normal(vocab_size, dim_att_dec)
        self.seq_pos_embedding = _trunc_normal(max_seq_len, dim_att_dec)
        self.output_bias = _trunc_normal(vocab_size)
        self.decoder = nn.ModuleList(DecoderLayer(dim_att_dec, num_heads_dec, dim_mlp_dec, drop_path, drop_units,
                                                  drop_att) for _ in range(num_decoder_layers))
        self.decoder_ln = nn.LayerNorm(dim_att_dec, eps=LN_EPS)
        self.max_seq_len = max_seq_len

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> the memory the decoder attends to [B, rows x cols, dim_att_dec] (one
        token per cell of the backbone's feature map or per patch)."""
        if self.backbone is None:
            fmap = self.stem_conv(images)
            rows, cols = fmap.shape[-2:]
            tokens = self.stem_ln(fmap.flatten(2).transpose(1, 2))
        else:
            fmap = self.backbone(images)[-1]
            rows, cols = fmap.shape[-2:]
            tokens = self.stem_ln(self.stem_projection(self.feature_dropout(fmap.flatten(2).transpose(1, 2))))
        x = tokens + sincos_2d(rows, cols, tokens.shape[-1], tokens.device).to(tokens.dtype)
        for layer in self.encoder:
            x = layer(x)
        x = self.proj_ln(self.proj(self.encoder_ln(x)))
        return self.proj_mlp(x + sincos_2d(rows, cols, x.shape[-1], x.device).to(x.dtype))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder_ln(h) @ self.token_embedding.T + self.output_bias

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] for input tokens [B, T] (causal)."""
        t = tokens.shape[1]
        x = self.token_embedding[tokens] + self.seq_pos_embedding[:t]
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        for layer in self.decoder:
            h = layer.self_ln(x)
            x = layer(x, layer.self_attn.keys_values(h), layer.cross_attn.keys_values(memory), mask)
        return self.logits(x)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(tokens, self.encode(images))

    # ---------------------------------------------------------------- cached autoregressive decoding
    def start_cache(self, memory: torch.Tensor, length: int) -> dict:
        """Empty self-attention caches for `length` positions and the cross-attention keys/values of `memory`."""
        b = memory.shape[0]
        heads = self.decoder[0].self_attn.heads
        shape = (len(self.decoder), b, heads, length, memory.shape[-1] // heads)
        return {"k": memory.new_zeros(shape), "v": memory.new_zeros(shape), "length": 0,
                "cross": [layer.cross_attn.keys_values(memory) for layer in self.decoder]}

    def decode_step(self, tokens: torch.Tensor, cache: dict) -> torch.Tensor:
        """Logits [B, T, V] for the next T tokens [B, T] after the cache's prefix; the cache is extended in place."""
        start, t = cache["length"], tokens.shape[1]
        end = start + t
        x = self.token_embedding[tokens] + self.seq_pos_embedding[start:end]
        mask = torch.ones(t, end, dtype=torch.bool, device=x.device).tril(start)
        for i, layer in enumerate(self.decoder):
            h = layer.self_ln(x)
            k, v = layer.self_attn.keys_values(h)
            cache["k"][i, :, :, start:end], cache["v"][i, :, :, start:end] = k, v
            x = layer(x, (cache["k"][i, :, :, :end], cache["v"][i, :, :, :end]), cache["cross"][i], mask)
        cache["length"] = end
        return self.logits(x)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompt: torch.Tensor, max_seq_len: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
                 memory: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample max_seq_len - len(prompt) tokens after the prompt [B, P] (official `infer`: no early stop).
        Returns (tokens [B, N], their logits before temperature [B, N, V])."""
        memory = self.encode(images) if memory is None else memory
        n = max_seq_len - prompt.shape[1]
        cache = self.start_cache(memory, max_seq_len - 1)
        tokens, logits = [], []
        step_input = prompt
        for _ in range(n):
            next_logits = self.decode_step(step_input, cache)[:, -1]
            step_input = sample_token(next_logits, temperature, top_k, top_p, generator)[:, None]
            tokens.append(step_input)
            logits.append(next_logits)
        return torch.cat(tokens, 1), torch.stack(logits, 1)
