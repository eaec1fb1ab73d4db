"""One package per paper. Importing this registers every architecture (so LightningCLI knows the
short class names); the module itself is callable: `zoo.models()` lists the registered keys."""
from __future__ import annotations

import sys
import types

from zoo.models import (  # noqa: F401  (registers)
    baselines, bit_diffusion, canonical_capsules, capsnet, cerberus, cka, commentaries, confidence_penalty, cvxnet,
    deep_lambertian, distillation, dmfa, fast_weights, forward_forward, forward_gradient, fwl, glom, grbm, imputer,
    label_smoothing, lookahead, moe_lm, nam, nasa, pix2seq, remedis, seq2seq_parser, simclr, simclrv2, snnl,
    soft_tree, speech_rnn, subclass_distillation,
)


class _Models(types.ModuleType):
    def __call__(self, pattern: str = "*") -> list[str]:
        """Registered architecture keys matching a glob pattern (timm's list_models)."""
        from zoo._registry import model_keys

        return model_keys(pattern)


sys.modules[__name__].__class__ = _Models
