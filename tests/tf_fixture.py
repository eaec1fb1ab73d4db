"""TensorFlow-side fixtures for the converter tests, run in a child process: TensorFlow and torch's stack (triton)
crash when loaded into one process, and the zoo itself keeps them apart (zoo._convert reads checkpoints in a child).

`write_tf_fixtures` saves real Keras layers with random weights, their inputs and outputs (the layer-convention
tests), and a real TF2 object-based checkpoint holding every variable of a listing (names as tf.train.load_checkpoint
lists them, e.g. tests/data/pix2seq_official_variables.txt) with random values.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is not installed (pip install 'hinton-zoo[convert]')")

_PRELUDE = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import tensorflow as tf
rng = np.random.default_rng(int(sys.argv[2]))
"""

_DUMP = r"""
def dump(path, npz):
    reader = tf.train.load_checkpoint(path)  # the variables as the checkpoint holds them, names without the suffix
    names = [n for n in reader.get_variable_to_shape_map() if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    np.savez(npz, **{n.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"): reader.get_tensor(n) for n in names})
"""

_WRITE_LISTED = r"""
SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
for listing in sys.argv[4:]:
    root, out = tf.train.Checkpoint(), sys.argv[3] + "/" + os.path.basename(listing).removesuffix(".txt")
    for line in open(listing):
        if line.startswith("#") or not line.strip():
            continue
        name, *shape = line.split()
        if not name.endswith(SUFFIX) or name == "save_counter" + SUFFIX:
            continue  # the object graph and the save counter are written by tf.train.Checkpoint itself
        shape = [] if shape == ["-"] else [int(s) for s in shape]
        parts = [p.replace(".S", "/").replace("..", ".") for p in name[: -len(SUFFIX)].split("/")]
        node = root
        for part in parts[:-1]:
            if not hasattr(node, part):
                setattr(node, part, tf.Module())
            node = getattr(node, part)
        if "iteration" in name or name.startswith("global_step"):
            value = tf.Variable(np.int64(rng.integers(1, 1000)))
        elif "moving_variance" in name:
            value = tf.Variable(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        else:
            value = tf.Variable(rng.standard_normal(shape).astype(np.float32) * 0.1)
        setattr(node, parts[-1], value)
    dump(root.save(out + "/ckpt"), out + "/variables.npz")
"""

_KERAS_LAYERS = r"""
out = sys.argv[3] + "/keras"
x = rng.standard_normal((2, 5, 8)).astype(np.float32)
memory = rng.standard_normal((2, 7, 8)).astype(np.float32)
image = rng.standard_normal((2, 9, 9, 3)).astype(np.float32)
dense = tf.keras.layers.Dense(6)
ln = tf.keras.layers.LayerNormalization(epsilon=1e-6)
mha = tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
conv = tf.keras.layers.Conv2D(4, 3, strides=2, padding="valid", use_bias=False)
bn = tf.keras.layers.BatchNormalization(epsilon=1e-5)
outputs = {"dense": dense(x), "ln": ln(x), "mha": mha(x, memory),
           # the official ResNet pads a strided convolution by (k-1)//2 on each side, then convolves "valid"
           "conv": conv(tf.pad(image, [[0, 0], [1, 1], [1, 1], [0, 0]]))}
bn(outputs["conv"], training=False)
for layer in (dense, ln, mha, conv, bn):  # random weights everywhere, BN statistics included
    for v in layer.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape) if "variance" in v.name else rng.standard_normal(v.shape) * 0.5)
outputs = {"dense": dense(x), "ln": ln(x), "mha": mha(x, memory),
           "conv": conv(tf.pad(image, [[0, 0], [1, 1], [1, 1], [0, 0]]))}
outputs["bn"] = bn(outputs["conv"], training=False)
embedding = tf.Variable(rng.standard_normal((11, 8)).astype(np.float32))
bias = tf.Variable(rng.standard_normal(11).astype(np.float32))
outputs["logits"] = tf.matmul(x, embedding, transpose_b=True) + bias  # the official shared-embedding read-out
# the official ResNet's pools (SimCLR): the stem's 3x3/2 "SAME" max-pool and the ResNet-D shortcut's 2x2 average,
# "SAME" at stride 1, explicit bottom/right zero padding then "VALID" at stride 2; on even and odd sizes
pools = {"even": rng.standard_normal((2, 8, 8, 3)).astype(np.float32),
         "odd": rng.standard_normal((2, 7, 7, 3)).astype(np.float32)}
for k, v in pools.items():
    outputs[f"maxpool_{k}"] = tf.keras.layers.MaxPooling2D(3, 2, padding="same")(v)
    outputs[f"avgdown1_{k}"] = tf.keras.layers.AveragePooling2D(2, 1, padding="same")(v)
    outputs[f"avgdown2_{k}"] = tf.keras.layers.AveragePooling2D(2, 2, padding="valid")(
        tf.pad(v, [[0, 0], [0, 1], [0, 1], [0, 0]]))
    outputs[f"pool_in_{k}"] = v
root = tf.train.Checkpoint(dense=dense, ln=ln, mha=mha, conv=conv, bn=bn)
root.decoder = tf.Module()
setattr(root.decoder, "ar_decoder/token_embedding", embedding)
setattr(root.decoder, "ar_decoder/outp_bias", bias)
np.savez(out + "/io.npz", x=x, memory=memory, image=image, **{k: np.asarray(v) for k, v in outputs.items()})
dump(root.save(out + "/ckpt"), out + "/variables.npz")
"""


def max_differences(ours: dict, official: dict) -> dict[str, float]:
    """For each output name: the largest |ours - official| and the largest |official| (the scale it is read at)."""
    import numpy as np

    out = {}
    for name, value in ours.items():
        out[f"{name}_max_abs_diff"] = float(np.abs(np.asarray(value) - official[name]).max())
        out[f"{name}_max_abs"] = float(np.abs(official[name]).max())
    return out


def write_tf_fixtures(folder: Path, *listings: Path, seed: int = 0) -> Path:
    """In one TensorFlow child (its start-up is most of the cost):
    - folder/keras: Keras Dense, LayerNormalization, MultiHeadAttention, Conv2D, BatchNormalization and the
      shared-embedding read-out with random weights, saved as a checkpoint (ckpt-1); their inputs and outputs in
      io.npz and the checkpoint's variables in variables.npz;
    - folder/<listing's stem>, for each listing: a checkpoint (ckpt-1) holding every variable it names, with random
      values, and its variables in variables.npz.
    Returns `folder`."""
    for sub in ("keras", *(p.stem for p in listings)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    script = _PRELUDE + _DUMP + _KERAS_LAYERS + _WRITE_LISTED
    run = subprocess.run([sys.executable, "-c", script, "", str(seed), str(folder), *map(str, listings)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return folder
