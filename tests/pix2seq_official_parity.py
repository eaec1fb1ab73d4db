"""The converted Pix2seq against the official model itself: google-research/pix2seq's `encoder_ar_decoder` (resnet,
resnet-c, vit-b or vit-l variant), imported at run time from a checkout, with random weights and random BatchNorm statistics, is saved as a
checkpoint; `zoo convert`'s mapping loads it into `Pix2SeqDetector`; both encode the same images and score the same
token sequence. Prints the largest differences. Not part of the suite (it needs the official checkout and a Python
with TensorFlow and tf-keras, as the official code is Keras 2); tests/test_convert.py runs it when
ZOO_PIX2SEQ_CHECKOUT and ZOO_TF_KERAS_PYTHON are set.

    python tests/pix2seq_official_parity.py --checkout ~/src/pix2seq --tf-python ~/tfenv/bin/python \
        [--variant vit-b --size 160 --encoder-layers 6 --decoder-layers 6]

The official code imports tensorflow_addons (unmaintained, broken on Keras 2.16+) for GroupNormalization and LAMB,
which the resnet detector does not use; the TensorFlow half stubs the module with Keras's own GroupNormalization.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

_OFFICIAL = r"""
import os, sys, types
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
checkout, out, size, n_enc, n_dec, variant = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                              int(sys.argv[5]), sys.argv[6])
sys.path.insert(0, checkout)
import numpy as np
import tensorflow as tf
stub = types.ModuleType("tensorflow_addons")
stub.layers = types.ModuleType("tensorflow_addons.layers")
stub.layers.GroupNormalization = tf.keras.layers.GroupNormalization
stub.optimizers = types.SimpleNamespace(LAMB=None)
sys.modules.update({"tensorflow_addons": stub, "tensorflow_addons.layers": stub.layers})
from models import ar_model  # noqa: F401  (registers encoder_ar_decoder)
from models import model as model_lib
from configs import config_det_finetune
from configs.config_base import architecture_config_map

config = config_det_finetune.get_config()
config.model.update(architecture_config_map[variant])
config.model.update(image_size=(size, size), num_encoder_layers=n_enc, num_decoder_layers=n_dec)
model = model_lib.ModelRegistry.lookup(config.model.name)(config)
rng = np.random.default_rng(0)
images = tf.constant(rng.uniform(size=(2, size, size, 3)).astype(np.float32))
seq = tf.constant(rng.integers(0, config.model.vocab_size, size=(2, 17)))
model(images, seq, training=False)
for v in model.variables:
    shape = v.shape.as_list()
    if "moving_variance" in v.name:
        v.assign(rng.uniform(0.5, 1.5, shape))
    else:
        v.assign(rng.standard_normal(shape) * (0.05 if len(shape) > 1 else 0.2))
np.savez(out + "/io.npz", images=images.numpy(), seq=seq.numpy(), logits=model(images, seq, training=False).numpy(),
         encoded=model._encode_images(images, training=False).numpy())
tf.train.Checkpoint(model=model, global_step=tf.Variable(1, dtype=tf.int64)).save(out + "/ckpt")
"""


# the official architecture map's widths of each variant, as Pix2SeqDetector arguments
VARIANTS = {"resnet": {},
            "resnet-c": {"feature_stage": 3, "dim_att": 512, "dim_mlp": 2048, "num_heads": 16, "dim_att_dec": 512,
                         "dim_mlp_dec": 2048, "num_heads_dec": 16},
            "vit-b": {"backbone": "vit", "dim_att": 768, "dim_mlp": 3072, "num_heads": 12, "dim_att_dec": 512,
                      "dim_mlp_dec": 2048, "num_heads_dec": 16},
            "vit-l": {"backbone": "vit", "dim_att": 1024, "dim_mlp": 4096, "num_heads": 16, "dim_att_dec": 512,
                      "dim_mlp_dec": 2048, "num_heads_dec": 16}}


def parity(checkout: str, tf_python: str, size: int = 160, encoder_layers: int = 6,
           decoder_layers: int = 6, variant: str = "resnet") -> dict[str, float]:
    import numpy as np
    import torch

    from tf_fixture import max_differences

    from zoo._convert import checkpoint_prefix, convert_state, read_tf_checkpoint
    from zoo.models.pix2seq import Pix2SeqDetector

    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([tf_python, "-c", _OFFICIAL, checkout, tmp, str(size), str(encoder_layers),
                              str(decoder_layers), variant], capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"the official model did not run:\n{run.stderr[-3000:]}")
        io = dict(np.load(Path(tmp) / "io.npz"))
        variables, _ = read_tf_checkpoint(checkpoint_prefix(tmp))
    det = Pix2SeqDetector(image_size=size, num_encoder_layers=encoder_layers, num_decoder_layers=decoder_layers,
                          **VARIANTS[variant])
    det.load_state_dict(convert_state("pix2seq", variables, det, "official parity"))
    det.eval()
    with torch.no_grad():
        encoded = det.model.encode(torch.from_numpy(io["images"]).permute(0, 3, 1, 2))
        logits = det.model.decode(torch.from_numpy(io["seq"]), encoded)
    return {"variables": len(variables), **max_differences({"encoded": encoded.numpy(), "logits": logits.numpy()}, io)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", required=True, help="a checkout of google-research/pix2seq")
    p.add_argument("--tf-python", required=True, help="a Python with tensorflow, tf-keras, ml_collections, einops")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--encoder-layers", type=int, default=6)
    p.add_argument("--decoder-layers", type=int, default=6)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="resnet")
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for k, v in parity(a.checkout, a.tf_python, a.size, a.encoder_layers, a.decoder_layers, a.variant).items():
        print(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}")
