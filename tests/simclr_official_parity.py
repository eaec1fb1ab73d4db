"""The converted SimCLR networks against the official model itself: google-research/simclr's TF1 `resnet.py` and
`model_util.py` heads, imported at run time from a checkout, built in graph mode with random weights and random
batch-norm statistics after one Momentum step (so the optimizer's slots are in the checkpoint, as in the released
ones), saved with tf.train.Saver; `zoo convert`'s mapping loads it into the zoo network; both run the same images.
Prints the largest differences. Not part of the suite (it needs the official checkout and a Python with TensorFlow
and tf-keras, as the official code uses the TF1 layers); tests/test_simclr_convert.py runs it when
ZOO_SIMCLR_CHECKOUT and ZOO_TF_KERAS_PYTHON are set.

    python tests/simclr_official_parity.py --checkout ~/src/simclr --tf-python ~/tfenv/bin/python \
        [--depth 50 --width 1 --sk --size 64 --selector 0 --listing OUT.txt]

`--selector 0` converts into `SimCLR` (encoder, 3-layer head, linear-evaluation probe on h: the "pretrained"
checkpoints); `--selector 1` into `SimCLRv2FineTune` (the classifier on the head's first layer: "finetuned").
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

_OFFICIAL = r"""
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
checkout, out = sys.argv[1], sys.argv[2]
depth, width, sk, size, head_layers, selector, classes = (int(a) for a in sys.argv[3:10])
sys.path.insert(0, checkout)
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
from absl import flags
for name, default in (("sk_ratio", 0.0625 if sk else 0.0), ("se_ratio", 0.0), ("batch_norm_decay", 0.9)):
    flags.DEFINE_float(name, default, "")
flags.DEFINE_bool("global_bn", True, "")
for name, default in (("proj_out_dim", 128), ("num_proj_layers", head_layers), ("ft_proj_selector", selector),
                      ("fine_tune_after_block", -1)):
    flags.DEFINE_integer(name, default, "")
flags.DEFINE_string("proj_head_mode", "nonlinear" if head_layers else "none", "")
flags.DEFINE_string("train_mode", "finetune", "")
flags.FLAGS(["official"])
import model_util, resnet
rng = np.random.default_rng(0)
images = tf.constant(rng.uniform(size=(2, size, size, 3)).astype(np.float32))
with tf.variable_scope("base_model"):
    hiddens = resnet.resnet_v1(resnet_depth=depth, width_multiplier=width, cifar_stem=False)(images, is_training=False)
logits = model_util.supervised_head(model_util.projection_head(hiddens, is_training=False), classes, is_training=False)
step = tf.train.get_or_create_global_step()
train = tf.train.MomentumOptimizer(0.1, 0.9).minimize(tf.reduce_sum(logits), global_step=step)
with tf.Session() as s:
    s.run(tf.global_variables_initializer())
    s.run(train)
    for v in tf.global_variables():
        if v.dtype.base_dtype == tf.float32:
            shape = v.shape.as_list()
            value = (rng.uniform(0.5, 1.5, shape) if "moving_variance" in v.name
                     else rng.standard_normal(shape) * (0.1 if len(shape) > 1 else 0.3))
            v.load(value.astype(np.float32), s)
    np.savez(out + "/io.npz", images=s.run(images), hiddens=s.run(hiddens), logits=s.run(logits))
    tf.train.Saver().save(s, out + "/model.ckpt", global_step=1)
reader = tf.train.load_checkpoint(out + "/model.ckpt-1")
with open(out + "/listing.txt", "w") as f:
    for name, shape in sorted(reader.get_variable_to_shape_map().items()):
        f.write(f"{name} {' '.join(map(str, shape)) or '-'}\n")
"""


def parity(checkout: str, tf_python: str, depth: int = 50, width: int = 1, sk: bool = False, size: int = 64,
           head_layers: int = 3, selector: int = 0, classes: int = 10, listing: str | None = None
           ) -> dict[str, float]:
    import numpy as np
    import torch

    from tf_fixture import max_differences

    from zoo._convert import checkpoint_prefix, convert_state, read_tf_checkpoint
    from zoo.models.simclr import SimCLR
    from zoo.models.simclrv2 import SimCLRv2FineTune

    with tempfile.TemporaryDirectory() as tmp:
        args = [str(a) for a in (depth, width, int(sk), size, head_layers, selector, classes)]
        run = subprocess.run([tf_python, "-c", _OFFICIAL, checkout, tmp, *args], capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"the official model did not run:\n{run.stderr[-3000:]}")
        io = dict(np.load(Path(tmp) / "io.npz"))
        variables, _ = read_tf_checkpoint(checkpoint_prefix(tmp))
        if listing:
            Path(listing).write_text((Path(tmp) / "listing.txt").read_text())
    shape = dict(num_classes=classes, depth=depth, width=float(width), in_chans=3, cifar_stem=False,
                 sk_ratio=0.0625 if sk else 0.0, head_layers=head_layers)
    if selector:
        net = SimCLRv2FineTune(**shape, ft_proj_selector=selector)
    else:
        net = SimCLR(**shape, head="nonlinear" if head_layers else "none")
    net.load_state_dict(convert_state("simclr", variables, net, "official parity"))
    net.eval()
    with torch.no_grad():
        x = torch.from_numpy(io["images"]).permute(0, 3, 1, 2)
        h, logits = net.net.f(x), net(x)
    return {"variables": len(variables), **max_differences({"hiddens": h.numpy(), "logits": logits.numpy()}, io)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkout", required=True, help="a checkout of google-research/simclr")
    p.add_argument("--tf-python", required=True, help="a Python with tensorflow, tf-keras and absl-py")
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--sk", action="store_true", help="selective kernels (sk_ratio 0.0625)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--head-layers", type=int, default=3, help="0: no projection head (SimCLR v1 checkpoints)")
    p.add_argument("--selector", type=int, default=0)
    p.add_argument("--listing", help="also write the checkpoint's variable listing here")
    a = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for k, v in parity(a.checkout, a.tf_python, a.depth, a.width, a.sk, a.size, a.head_layers, a.selector,
                       listing=a.listing).items():
        print(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}")
